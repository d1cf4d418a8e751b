"""Foundation: health, readiness, error contract, request ids, metrics, system info."""

from __future__ import annotations

import time

from services.infra.redis import connect


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["detail"], dict)
    return body["error"]


def test_healthz_and_readyz_become_ready(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(background_load=True, spaces={"en": str(en), "fr": str(fr)}) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        deadline = time.monotonic() + 30
        while (r := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "not_ready"
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        components = r.json()["components"]
        assert components["redis"]["state"] == "ready"
        assert components["spaces"]["state"] == "ready"


def test_readyz_names_failed_component(make_client):
    with make_client(spaces={"en": "/nonexistent/en.vec"}) as client:
        r = client.get("/readyz")
        err = _assert_error(r, 503, "not_ready")
        assert "spaces" in err["message"]
        assert err["detail"]["components"]["spaces"]["state"] == "failed"
        assert "/nonexistent/en.vec" in err["detail"]["components"]["spaces"]["reason"]


def test_unknown_route_is_404_in_contract(make_client):
    with make_client() as client:
        err = _assert_error(client.get("/v1/nope"), 404, "not_found")
        assert "/v1/nope" in err["message"]


def test_validation_error_is_422_naming_field(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        err = _assert_error(client.get("/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr", "k": 0}),
                            422, "invalid_input")
        assert any(e["field"] == "k" for e in err["detail"]["errors"])


def test_bad_json_body_is_400(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        r = client.post("/v1/translate", content=b"{not json", headers={"content-type": "application/json"})
        _assert_error(r, 400, "bad_request")


def test_request_id_is_echoed_or_generated(make_client):
    with make_client() as client:
        assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        generated = client.get("/healthz").headers["x-request-id"]
        assert len(generated) == 32 and generated != "abc-123"


def test_metrics_expose_request_histogram(make_client):
    with make_client() as client:
        client.get("/healthz")
        text = client.get("/metrics").text
        assert "vislex_request_seconds_bucket" in text
        assert 'route="/healthz"' in text
        assert "vislex_stage_seconds" in text


def test_system_reports_redis_and_device(make_client, redis_url):
    with make_client() as client:
        info = client.get("/v1/system").json()
        assert info["redis"]["reachable"] is True
        assert info["device"] in ("cpu", "cuda")
        assert info["version"]
        assert "spaces" in info["components"]
    assert connect(redis_url).ping()


def test_openapi_has_stable_operation_ids(make_client):
    with make_client() as client:
        spec = client.get("/openapi.json").json()
        ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
        assert len(ids) == len(set(ids))
        assert {"getHealth", "getReadiness", "getMetrics", "getSystem"} <= set(ids)


def test_overload_returns_429(make_client):
    with make_client(max_in_flight=1) as client:
        # The middleware counts this request itself, so a limit of 1 still serves sequential calls.
        assert client.get("/healthz").status_code == 200
        middleware = client.app.middleware_stack
        while not hasattr(middleware, "in_flight"):
            middleware = middleware.app
        middleware.in_flight = 1  # simulate one request already being served
        try:
            err = _assert_error(client.get("/healthz"), 429, "overloaded")
            assert err["detail"]["max_in_flight"] == 1
        finally:
            middleware.in_flight = 0
