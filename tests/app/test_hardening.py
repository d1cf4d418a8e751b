"""Issue 19, part B: Redis failures are 503s, the contract covers every edge (405, 414, 415, extra fields),
overload is shed for every request, one access line per request.

Redis behaviour is checked against a real redis-server (killed, paused, restarted on the same port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from services.infra.redis import EmbeddedRedis, connect

JOB = {"src": "en", "tgt": "fr", "method": "procrustes", "seed": "identical"}


def _settings(tmp_path, planted_spaces, **overrides) -> Settings:
    en, fr, *_ = planted_spaces
    params = {"data_dir": tmp_path / "data", "encoder_languages": [], "clip_pretrained": None, "log_json": False,
              "spaces": {"en": str(en), "fr": str(fr)}, "job_heartbeat_s": 0.5}
    params.update(overrides)
    return Settings(**params)


def _assert_redis_503(r) -> None:
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "redis_unavailable" and "redis" in err["message"].lower(), err
    assert err["detail"]["component"] == "redis"
    assert r.headers["retry-after"] == "1"


def test_jobs_answer_503_naming_redis_while_it_is_down_then_recover(tmp_path, planted_spaces):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    restarted = None
    try:
        app = create_app(_settings(tmp_path, planted_spaces, redis_url=url), background_load=False)
        with TestClient(app) as client:
            queued = client.post("/v1/alignments", json={**JOB, "options": {"queue": "heavy"}})
            assert queued.status_code == 202, queued.text
            job_id = queued.json()["id"]

            server.stop()  # Redis killed
            _assert_redis_503(client.get("/v1/alignments"))
            _assert_redis_503(client.get(f"/v1/alignments/{job_id}"))
            _assert_redis_503(client.post("/v1/alignments", json={**JOB, "method": "kabsch"}))
            _assert_redis_503(client.delete(f"/v1/alignments/{job_id}"))

            restarted = EmbeddedRedis(tmp_path / "redis", port=server.port)
            restarted.start()  # back, same port, same AOF
            deadline = time.monotonic() + 10
            while (r := client.get(f"/v1/alignments/{job_id}")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert r.status_code == 200 and r.json()["state"] == "queued", r.text  # nothing lost
            assert client.get("/v1/alignments").json()["total"] == 1
    finally:
        for s in (restarted, server):
            if s is not None:
                s.stop()


def test_paused_redis_is_a_quick_503_not_a_hang(tmp_path, planted_spaces):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    app = create_app(_settings(tmp_path, planted_spaces, redis_url=url), background_load=False)
    try:
        with TestClient(app) as client:
            assert client.get("/v1/alignments").status_code == 200
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                start = time.monotonic()
                _assert_redis_503(client.get("/v1/alignments"))
                assert time.monotonic() - start < 3.0
                r = client.get("/readyz")
                assert r.status_code == 503 and "redis" in r.json()["error"]["message"]
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 10
            while client.get("/v1/alignments").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.get("/v1/alignments").status_code == 200
    finally:
        server.stop()


def test_delete_of_a_queued_job_cancels_it_with_200(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        client.app.state.runtime.redis.flushdb()
        # no worker serves 'heavy' here: the job stays queued
        job = client.post("/v1/alignments", json={**JOB, "options": {"queue": "heavy"}}).json()
        assert job["state"] == "queued"
        r = client.delete(f"/v1/alignments/{job['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled"
        again = client.delete(f"/v1/alignments/{job['id']}")
        assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]


def test_extra_fields_are_422_on_every_json_body(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        r = client.post("/v1/translate", json={"words": ["w1"], "src": "en", "tgt": "fr", "retreival": "nn"})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["detail"]["errors"][0]["field"] == "retreival"
        r = client.post("/v1/alignments", json={**JOB, "retreival": "nn"})
        assert r.status_code == 422 and "retreival" in r.json()["error"]["message"]
    schema = create_app(Settings(encoder_languages=[], clip_pretrained=None)).openapi()
    bodies = {name: s for name, s in schema["components"]["schemas"].items()
              if any(op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                     .get("$ref", "").endswith("/" + name)
                     for ops in schema["paths"].values() for op in ops.values() if isinstance(op, dict))}
    assert bodies
    for name, s in bodies.items():
        assert s.get("additionalProperties") is False, name


def test_a_non_json_body_is_415(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        for path in ("/v1/translate", "/v1/alignments"):
            r = client.post(path, content=b"dog", headers={"content-type": "text/plain"})
            assert r.status_code == 415, r.text
            assert r.json()["error"]["code"] == "unsupported_media_type"


def test_a_huge_query_string_gets_the_json_contract(make_client):
    with make_client() as client:
        r = client.get("/v1/translate", params={"word": "x" * 60_000, "src": "en", "tgt": "fr"})  # httpx: < 64 KiB
        assert r.status_code == 414, r.text
        assert r.json()["error"]["code"] == "uri_too_long"


def test_unknown_target_lists_every_served_space(make_client, planted_spaces):
    import numpy as np

    from services.serving.space import WordSpace

    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        registry = client.app.state.runtime.spaces
        # an encoder-derived space: served, with no file in the jobs' catalog
        vectors = np.eye(4, dtype=np.float32)
        registry.add_space(WordSpace.build("de", ["a", "b", "c", "d"], vectors, source="encoder:stub",
                                           fingerprint="stub-de"))
        r = client.post("/v1/alignments", json={**JOB, "tgt": "xx"})
        assert r.status_code == 404
        assert r.json()["error"]["detail"]["known"] == ["de", "en", "fr"]


def test_405_allow_lists_every_method_of_the_path(make_client):
    with make_client() as client:
        r = client.put("/v1/alignments")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        allow = set(r.headers["allow"].replace(" ", "").split(","))
        assert {"GET", "POST"} <= allow and "PUT" not in allow and "DELETE" not in allow
        r = client.post("/v1/alignments/abc")
        allow = set(r.headers["allow"].replace(" ", "").split(","))
        assert {"GET", "DELETE"} <= allow and "POST" not in allow


# ---- overload: every request counted, probes never shed ------------------------------------------

def test_requests_answered_without_awaiting_are_counted_and_shed():
    """A table hit never awaits: it must still count as in flight while a burst is queued behind it."""
    from app.middleware import RequestContextMiddleware

    async def instant(scope, receive, send):  # like a table hit: no await before the response
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = RequestContextMiddleware(instant, max_in_flight=8)

    async def one(path: str) -> int:
        status = {}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status["s"] = message["status"]

        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
        await mw(scope, receive, send)
        return status["s"]

    async def burst():
        return await asyncio.gather(*[one("/v1/translate") for _ in range(100)], one("/healthz"), one("/readyz"))

    statuses = asyncio.run(burst())
    assert statuses.count(429) >= 80 and statuses.count(200) >= 8, statuses
    assert statuses[-2:] == [200, 200]  # probes are never shed
    assert mw.in_flight == 0


def test_one_access_line_per_request(make_client):
    from services.observability import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    records: list[logging.LogRecord] = []
    configure_logging("info", json_logs=False)  # what `vislex serve` / app_from_env do
    capture = logging.Handler()
    capture.emit = records.append  # type: ignore[method-assign]
    root.addHandler(capture)
    try:
        with make_client() as client:
            # uvicorn's own access logger (on by default when started as `uvicorn app...`) stays silent
            logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1", "GET", "/x", "1.1", 200)
            client.get("/v1/system")
        lines = [r for r in records if r.name in ("uvicorn.access", "vislex.access")]
        assert [r.name for r in lines] == ["vislex.access"]
        assert lines[0].path == "/v1/system" and lines[0].status == 200
    finally:
        logging.getLogger("uvicorn.access").disabled = False
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
