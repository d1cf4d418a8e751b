"""The probe listener (issue 19): /healthz and /readyz on VISLEX_PROBE_PORT, served by their own thread.

Under the 1,000-connection overload drill a /healthz on the API port took 3.2 s: every request waits for
uvicorn's one event loop. The probe port answers the same bodies and statuses from its own thread, so a
probe stays fast while the API's loop is saturated (reproduced cheaply below by blocking the loop).
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from app.settings import Settings, SettingsError, load_settings
from services.infra.redis import free_port


def _get(port: int, path: str, host: str = "127.0.0.1") -> httpx.Response:
    """One request on a fresh connection (what a Kubernetes/compose probe does)."""
    return httpx.get(f"http://{host}:{port}{path}", timeout=5)


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


# ---- settings --------------------------------------------------------------------------------------------
def test_probe_port_defaults_to_the_api_port_plus_one_and_0_turns_it_off(monkeypatch):
    monkeypatch.delenv("VISLEX_PROBE_PORT", raising=False)
    assert Settings().probe_port == 8001
    assert Settings(port=9000).probe_port == 9001
    assert Settings(port=65535).probe_port == 0  # no port + 1: off
    assert Settings(probe_port=0).probe_port == 0
    monkeypatch.setenv("VISLEX_PORT", "9100")
    assert load_settings().probe_port == 9101
    monkeypatch.setenv("VISLEX_PROBE_PORT", "9100")
    with pytest.raises(SettingsError, match="VISLEX_PROBE_PORT 9100 is the API port"):
        load_settings()
    monkeypatch.setenv("VISLEX_PROBE_PORT", "70000")
    with pytest.raises(SettingsError, match="VISLEX_PROBE_PORT"):
        load_settings()


def test_serve_says_where_probes_are_served(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import services.observability
    import vislex.supervisor
    from vislex.cli import app

    monkeypatch.setattr(vislex.supervisor, "serve", lambda settings, env: None)
    monkeypatch.setattr(services.observability, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("VISLEX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VISLEX_PROBE_PORT", raising=False)
    runner = CliRunner()
    out = runner.invoke(app, ["serve", "--port", "9000"]).output
    assert "probes /healthz, /readyz on http://127.0.0.1:9001 (VISLEX_PROBE_PORT" in out
    monkeypatch.setenv("VISLEX_PROBE_PORT", "0")
    out = runner.invoke(app, ["serve"]).output
    assert "probes /healthz, /readyz on the API port only (http://127.0.0.1:8000; VISLEX_PROBE_PORT=0)" in out


# ---- same answers as the API's probes ----------------------------------------------------------------------
def test_probe_port_answers_healthz_and_readyz_like_the_api(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    port = free_port()
    with make_client(spaces={"en": str(en), "fr": str(fr)}, probe_port=port) as client:
        assert client.app.state.probe_server.port == port
        for path in ("/healthz", "/readyz"):
            api, probe = client.get(path), _get(port, path)
            assert probe.status_code == api.status_code == 200, probe.text
            assert probe.json() == api.json()
            assert probe.headers["content-type"] == api.headers["content-type"] == "application/json"
        assert _get(port, "/healthz").json()["status"] == "ok"
        assert _get(port, "/readyz").json()["status"] == "ready"
        # only the probes: anything else is a 404/405 in the error contract
        r = _get(port, "/v1/spaces")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = httpx.post(f"http://127.0.0.1:{port}/readyz", content=b"x", timeout=5)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert r.headers["allow"] == "GET, HEAD"
        head = httpx.head(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert head.status_code == 200 and head.content == b""


def test_probe_port_readyz_is_503_while_a_required_component_loads(make_client, monkeypatch):
    """The same 503 body (component, state, progress) and Retry-After as the API's /readyz, then the same 200."""
    import app.wiring
    from app.runtime import connect_redis

    gate, entered = threading.Event(), threading.Event()

    def slow_loader(runtime):
        runtime.components["gated"].progress = {"built": 1, "total": 2}
        entered.set()
        assert gate.wait(30)

    monkeypatch.setattr(app.wiring, "LOADERS", [("redis", True, connect_redis), ("gated", True, slow_loader),
                                                ("optional", False, lambda runtime: None)])
    port = free_port()
    with make_client(background_load=True, probe_port=port) as client:
        try:
            assert entered.wait(30)
            api, probe = client.get("/readyz"), _get(port, "/readyz")
            assert probe.status_code == api.status_code == 503
            assert probe.json() == api.json()
            err = probe.json()["error"]
            assert err["code"] == "not_ready" and "gated" in err["message"]
            assert err["detail"]["components"]["gated"] == {"state": "loading", "reason": None, "required": True,
                                                           "seconds": None, "progress": {"built": 1, "total": 2}}
            assert probe.headers["retry-after"] == api.headers["retry-after"] == "1"
            assert _get(port, "/healthz").status_code == 200  # alive while loading
        finally:
            gate.set()
        client.app.state.runtime.wait_loaded(30)
        api, probe = client.get("/readyz"), _get(port, "/readyz")
        assert probe.status_code == api.status_code == 200
        assert probe.json() == api.json()


def test_probe_port_readyz_names_redis_when_it_does_not_answer(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    port = free_port()
    with make_client(spaces={"en": str(en), "fr": str(fr)}, probe_port=port) as client:
        runtime = client.app.state.runtime
        runtime.redis_unreachable_reason = lambda: "ConnectionError: gone"  # as if Redis stopped answering
        api, probe = client.get("/readyz"), _get(port, "/readyz")
        assert probe.status_code == api.status_code == 503
        assert probe.json() == api.json()
        assert probe.json()["error"]["detail"]["components"]["redis"]["state"] == "unreachable"


# ---- on, off, stopped ---------------------------------------------------------------------------------------
def test_probe_port_is_off_when_disabled(make_client):
    with make_client(probe_port=0) as client:
        assert client.app.state.probe_server is None
        assert client.get("/healthz").status_code == 200  # the API keeps its own probes


def test_probe_port_stops_at_shutdown(make_client):
    port = free_port()
    with make_client(probe_port=port):
        assert _get(port, "/healthz").status_code == 200
        assert not _port_free(port)
    with pytest.raises(httpx.ConnectError):
        _get(port, "/healthz")
    assert _port_free(port)


def test_a_probe_port_in_use_stops_startup_naming_the_setting(make_client):
    from app.probes import ProbePortError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ProbePortError, match=f"127.0.0.1:{port} \\(VISLEX_PROBE_PORT\\)"):
            with make_client(probe_port=port):
                pass


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_probe_port_binds_an_ipv6_host(make_client):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 cannot be bound here")
    port = free_port()
    with make_client(host="::1", probe_port=port):
        assert _get(port, "/healthz", host="[::1]").status_code == 200


# ---- the problem it solves --------------------------------------------------------------------------------
def test_probe_port_answers_fast_while_the_api_event_loop_is_blocked(tmp_path, redis_url):
    """The drill's 3.2 s /healthz, reproduced cheaply: a synchronous handler holds uvicorn's one event loop for
    2 s. A /healthz on the API port (fresh connection) waits for it; the probe port answers at once."""
    import uvicorn

    from app.main import create_app

    api_port, probe_port = free_port(), free_port()
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, encoder_languages=[], clip_pretrained=None,
                        log_json=False, port=api_port, probe_port=probe_port)
    app = create_app(settings, background_load=False)
    blocking = threading.Event()

    async def hold_the_loop() -> dict:
        blocking.set()
        time.sleep(2.0)  # synchronous work in an async handler: nothing else on this loop runs meanwhile
        return {}

    app.add_api_route("/test/hold-the-loop", hold_the_loop)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_config=None, access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        assert _get(api_port, "/readyz").status_code == 200
        holder = threading.Thread(target=lambda: _get(api_port, "/test/hold-the-loop"), daemon=True)
        holder.start()
        assert blocking.wait(10)

        def timed(port: int, path: str) -> tuple[int, float]:
            t = time.perf_counter()
            status = _get(port, path).status_code
            return status, time.perf_counter() - t

        results: dict[str, tuple[int, float]] = {}
        api_probe = threading.Thread(target=lambda: results.__setitem__("api", timed(api_port, "/healthz")))
        api_probe.start()
        results["probe_healthz"] = timed(probe_port, "/healthz")
        results["probe_readyz"] = timed(probe_port, "/readyz")
        api_probe.join(10)
        holder.join(10)
        assert results["probe_healthz"][0] == 200 and results["probe_healthz"][1] < 0.5, results
        assert results["probe_readyz"][0] == 200 and results["probe_readyz"][1] < 0.5, results
        assert results["api"][0] == 200 and results["api"][1] > 1.0, results  # the problem, on the API port
    finally:
        server.should_exit = True
        thread.join(15)
    assert _port_free(probe_port)  # the lifespan stopped the listener with the server
