"""The embedded Redis an app starts for itself lives as long as the app; /readyz pings Redis live."""

from __future__ import annotations

import time

import psutil
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from services.infra.redis import EmbeddedRedis, connect, ping


def _settings(tmp_path, **overrides) -> Settings:
    params = {"data_dir": tmp_path / "data", "encoder_languages": [], "clip_pretrained": None, "log_json": False}
    params.update(overrides)
    return Settings(**params)


def _wait_ready(client, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while (r := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    return r


def test_embedded_redis_survives_the_loader_thread_and_stops_at_shutdown(tmp_path):
    app = create_app(_settings(tmp_path, redis_url=None), background_load=True)
    with TestClient(app) as client:
        _wait_ready(client)
        runtime = client.app.state.runtime
        assert runtime.embedded_redis is not None
        runtime.wait_loaded(30)
        assert runtime._thread is not None and not runtime._thread.is_alive()  # the loader thread has exited
        time.sleep(0.5)  # a parent-death signal tied to that thread would have killed the server by now
        url, pid = runtime.embedded_redis.url, runtime.embedded_redis.process.pid
        assert connect(url).ping()
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/system").json()["redis"] == {"reachable": True, "embedded": True}
    # shutdown stops it cleanly (SHUTDOWN, then the process is gone)
    assert not ping(url, timeout=0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_readyz_is_503_naming_redis_when_it_goes_down(tmp_path):
    server = EmbeddedRedis(tmp_path / "external-redis")
    url = server.start()
    try:
        with TestClient(create_app(_settings(tmp_path, redis_url=url), background_load=False)) as client:
            _wait_ready(client)
            server.stop()
            r = client.get("/readyz")
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "not_ready" and "redis" in err["message"]
            assert err["detail"]["components"]["redis"]["state"] == "unreachable"
            assert r.headers["retry-after"] == "1"
    finally:
        server.stop()
