"""Request bodies are refused (413, the error contract) as soon as they cross their limit (issue 19, defect 7).

The chunked cases drive the ASGI app directly with a body that never ends, counting the bytes the server
pulls: a server that spools the whole body before its 413 would never answer.
"""

from __future__ import annotations

import json

import pytest

LIMIT = 256 * 1024
CHUNK = 64 * 1024
BOUNDARY = b"vislexboundary"


@pytest.fixture()
def client(make_client):
    with make_client(max_upload_bytes=LIMIT, max_json_bytes=4096) as c:
        yield c


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 8000)}


def _drive(client, path: str, headers: list[tuple[bytes, bytes]], first: bytes, *, endless: bool = True):
    """(status, JSON body, response headers, bytes the app pulled) for a body of ``first`` + endless filler."""
    pulled = {"bytes": 0, "calls": 0}
    sent: list[dict] = []

    async def receive():
        pulled["calls"] += 1
        if pulled["calls"] > 100_000:  # ~6 GB: the test would have failed long before
            raise AssertionError("the body was read without end")
        chunk = first if pulled["calls"] == 1 else b"x" * CHUNK
        pulled["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": endless}

    async def send(message):
        sent.append(message)

    async def run():
        await client.app(_scope(path, headers), receive, send)

    client.portal.call(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), dict(start["headers"]), pulled["bytes"]


def _multipart_head(filename: str) -> bytes:
    return (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--' + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n')


@pytest.mark.parametrize("path, filename", [("/v1/spaces", "big.vec"), ("/v1/galleries/g/images", "big.png"),
                                            ("/v1/classify", "big.png")])
def test_chunked_upload_is_refused_once_it_crosses_the_limit(client, path, filename):
    field = b"files" if "galleries" in path else b"file"
    head = _multipart_head(filename).replace(b'name="file"', b'name="' + field + b'"')
    headers = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY), (b"transfer-encoding", b"chunked")]
    status, body, response_headers, pulled = _drive(client, path, headers, head)
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large" and body["error"]["detail"]["setting"] == "VISLEX_MAX_UPLOAD_BYTES"
    assert pulled <= LIMIT + 64 * 1024 + 2 * CHUNK  # stopped at the limit, not at the end of the body
    assert response_headers[b"connection"] == b"close"  # the rest of the body is not read either


def test_declared_length_over_the_limit_is_refused_before_reading(client):
    headers = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY), (b"content-length", b"1073741824")]
    status, body, _, pulled = _drive(client, "/v1/spaces", headers, b"")
    assert status == 413 and pulled == 0
    assert body["error"]["detail"]["limit"] == LIMIT + 64 * 1024


def test_json_bodies_have_a_limit_too(client):
    words = ["w" * 50] * 200  # ~10 KB of JSON, over the 4 KiB limit
    r = client.post("/v1/translate", json={"words": words, "src": "en", "tgt": "fr"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["detail"] == {"field": "body", "limit": 4096, "setting": "VISLEX_MAX_JSON_BYTES"}
    assert r.headers["x-request-id"]  # still inside the request context: logged and counted
    # chunked JSON (no Content-Length) is cut off the same way
    status, body, _, pulled = _drive(client, "/v1/alignments", [(b"content-type", b"application/json")], b'{"src": "')
    assert status == 413 and pulled <= 4096 + CHUNK


def test_bodies_under_the_limits_pass(client):
    r = client.post("/v1/spaces", data={"name": "ok"}, files={"file": ("ok.vec", b"1 2\nchat 0.1 0.2\n")})
    assert r.status_code == 201, r.text
    assert client.post("/v1/translate", json={"words": ["a"], "src": "en", "tgt": "fr"}).status_code != 413


def test_every_operation_with_a_body_documents_413(client):
    schema = client.get("/openapi.json").json()
    with_body = [(path, method) for path, ops in schema["paths"].items() for method, op in ops.items()
                 if "requestBody" in op]
    assert ("/v1/translate", "post") in with_body and ("/v1/spaces", "post") in with_body
    for path, method in with_body:
        assert "413" in schema["paths"][path][method]["responses"], (method, path)
