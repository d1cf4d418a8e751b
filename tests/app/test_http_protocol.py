"""Requests uvicorn's parser rejects get the JSON error contract (a real uvicorn server on loopback)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest


@pytest.fixture()
def server():
    import uvicorn

    from app.http_protocol import ContractHttpToolsProtocol

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=ContractHttpToolsProtocol,
                                       log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(10)


def _raw(port: int, request: bytes) -> tuple[int, dict, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_100k_query_string_is_a_json_414(server):
    status, headers, body = _raw(server, b"GET /v1/translate?word=" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "uri_too_long" and body["error"]["detail"]["max_query_bytes"] == 8192


def test_garbage_is_a_json_400(server):
    status, headers, body = _raw(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "bad_request"
