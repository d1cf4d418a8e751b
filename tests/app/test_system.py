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


def _sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_and_stages(make_client, planted_spaces):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}) as client:
        health = {"method": "GET", "route": "/healthz", "status": "200"}
        before = client.get("/metrics").text
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        r = client.get("/v1/spaces/en/neighbors", params={"word": "w1", "k": 3})
        assert r.status_code == 200, r.text
        after = client.get("/metrics").text
        # the request histogram counted exactly these three calls (the registry is process-wide: use deltas)
        assert _sample(after, "vislex_request_seconds_count", **health) \
            - _sample(before, "vislex_request_seconds_count", **health) == 3
        assert _sample(after, "vislex_request_seconds_bucket", le="+Inf", **health) \
            - _sample(before, "vislex_request_seconds_bucket", le="+Inf", **health) == 3
        # and the nearest-neighbour search was timed as a stage
        assert _sample(after, "vislex_stage_seconds_count", stage="search") \
            > _sample(before, "vislex_stage_seconds_count", stage="search")


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
        assert client.get("/v1/system").status_code == 200
        middleware = client.app.middleware_stack
        while not hasattr(middleware, "in_flight"):
            middleware = middleware.app
        middleware.in_flight = 1  # simulate one request already being served
        try:
            err = _assert_error(client.get("/v1/system"), 429, "overloaded")
            assert err["detail"]["max_in_flight"] == 1
        finally:
            middleware.in_flight = 0


def test_probes_answer_while_the_server_is_saturated(make_client):
    """A real request holds the only slot: health, readiness and metrics still answer; other routes get 429."""
    import threading

    entered, release = threading.Event(), threading.Event()
    with make_client(max_in_flight=1) as client:

        def slow() -> dict:  # sync route: runs in the threadpool, holding its in-flight slot
            entered.set()
            release.wait(30)
            return {"ok": True}

        client.app.add_api_route("/test/slow", slow, methods=["GET"])
        results = {}
        holder = threading.Thread(target=lambda: results.setdefault("slow", client.get("/test/slow")))
        holder.start()
        try:
            assert entered.wait(10)
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert client.get("/metrics").status_code == 200
            _assert_error(client.get("/v1/system"), 429, "overloaded")
        finally:
            release.set()
            holder.join(30)
        assert results["slow"].status_code == 200


def test_unexpected_exception_is_500_in_contract_with_request_id(make_client):
    with make_client() as client:

        def boom() -> dict:
            raise RuntimeError("secret internals")

        async def boom_async() -> dict:
            raise KeyError("more internals")

        client.app.add_api_route("/test/boom", boom, methods=["GET"])
        client.app.add_api_route("/test/boom-async", boom_async, methods=["GET"])
        for path in ("/test/boom", "/test/boom-async"):
            r = client.get(path, headers={"X-Request-ID": "req-500-abc"})
            err = _assert_error(r, 500, "internal_error")
            assert r.headers["x-request-id"] == "req-500-abc"
            assert err["detail"]["request_id"] == "req-500-abc"
            assert "internals" not in r.text
        generated = client.get("/test/boom")
        assert generated.status_code == 500 and len(generated.headers["x-request-id"]) == 32
        assert client.get("/healthz").status_code == 200  # the server keeps serving


def test_every_route_reading_a_body_documents_400(make_client):
    with make_client() as client:
        spec = client.get("/openapi.json").json()
        with_body = [(path, method) for path, ops in spec["paths"].items() for method, op in ops.items()
                     if "requestBody" in op]
        assert ("/v1/spaces", "post") in with_body and ("/v1/alignments", "post") in with_body
        missing = [(path, method) for path, method in with_body if "400" not in spec["paths"][path][method]["responses"]]
        assert missing == []
        error_ref = spec["paths"]["/v1/alignments"]["post"]["responses"]["400"]["content"]["application/json"]
        assert error_ref["schema"]["$ref"].endswith("/ErrorBody")


def test_optional_component_still_loading_does_not_hold_readiness(make_client, monkeypatch):
    """CLIP/uCLIP load after the required components; /readyz is 200 meanwhile and shows them loading."""
    import threading

    import app.wiring as wiring

    release = threading.Event()
    loaders = [(name, required, (lambda rt: release.wait(20)) if name == "clip" else loader)
               for name, required, loader in wiring.LOADERS]
    monkeypatch.setattr(wiring, "LOADERS", loaders)
    try:
        with make_client(background_load=True) as c:
            deadline = time.monotonic() + 20
            while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            ready = c.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["components"]["clip"]["state"] == "loading"
            assert c.get("/v1/fingerprints", params={"words": "dog", "lang": "en"}).status_code == 503
    finally:
        release.set()
