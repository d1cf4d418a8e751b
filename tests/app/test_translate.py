"""GET/POST /v1/translate through the real app: planted answers, errors, cache, new versions, readiness."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    assert isinstance(err["detail"], dict)
    return err


@pytest.fixture()
def mapping_file(planted_spaces, tmp_path):
    from services.alignment.mapping import LinearStage, Mapping

    _, _, R, *_ = planted_spaces
    mapping = Mapping("procrustes", [LinearStage(R.astype(np.float64))])
    path = tmp_path / "en-fr.npz"
    mapping.save(path)
    return path, mapping


@pytest.fixture()
def client(make_client, planted_spaces, mapping_file):
    en, fr, *_ = planted_spaces
    # table_k=0: these tests exercise the search and the Redis cache (tables: test_tables_answer_…).
    with make_client(spaces={"en": str(en), "fr": str(fr)}, mappings={"en-fr": str(mapping_file[0])},
                     max_batch_words=50, max_word_length=20, csls_knn=5, table_k=0) as c:
        yield c


def test_tables_answer_like_the_search_once_built(make_client, client, planted_spaces, mapping_file):
    en, fr, *_ = planted_spaces
    params = {"word": "w12", "src": "en", "tgt": "fr", "k": 4}
    searched = client.get("/v1/translate", params=params).json()["translations"]
    with make_client(spaces={"en": str(en), "fr": str(fr)}, mappings={"en-fr": str(mapping_file[0])},
                     csls_knn=5, table_k=5, table_build="eager") as tabled:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            spaces = tabled.get("/v1/spaces").json()
            entry = next(s for s in spaces["spaces"] if s["lang"] == "en")
            if entry["mappings"][0]["tables"] == {"csls": 5, "nn": 5}:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"tables not built: {entry}")
        assert entry["bytes_detail"]["tables"] > 0
        r = tabled.get("/v1/translate", params=params)

        def same(got):  # the table was searched in GEMM chunks: scores agree to float32 rounding
            assert [t["word"] for t in got] == [t["word"] for t in searched]
            np.testing.assert_allclose([t["score"] for t in got], [t["score"] for t in searched], atol=2e-6)

        assert r.status_code == 200
        same(r.json()["translations"])
        batch = tabled.post("/v1/translate", json={"words": ["w12", "nope"], "src": "en", "tgt": "fr", "k": 4})
        same(batch.json()["results"][0]["translations"])
        assert batch.json()["results"][1]["error"]["code"] == "word_not_found"
        metrics = tabled.get("/metrics").text
        assert 'vislex_table_words_total{retrieval="csls"}' in metrics


def test_single_word_returns_planted_translation_then_cached(client, mapping_file):
    r = client.get("/v1/translate", params={"word": "w12", "src": "en", "tgt": "fr", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"word", "src", "tgt", "retrieval", "exclude_identical", "mapping_version", "cached", "translations"}
    assert body["retrieval"] == "csls" and body["mapping_version"] == mapping_file[1].version
    assert body["cached"] is False
    assert [t["word"] for t in body["translations"]][0] == "m12" and len(body["translations"]) == 3
    again = client.get("/v1/translate", params={"word": "W12", "src": "en", "tgt": "fr", "k": 3}).json()
    assert again["cached"] is True and again["translations"] == body["translations"]
    nn = client.get("/v1/translate", params={"word": "w12", "src": "en", "tgt": "fr", "k": 1, "retrieval": "nn"})
    assert nn.json()["translations"][0]["word"] == "m12" and nn.json()["retrieval"] == "nn"


def test_batch_in_input_order_with_per_word_errors(client):
    words = ["w3", "unknownword", "w250", "w3", "x" * 21]
    r = client.post("/v1/translate", json={"words": words, "src": "en", "tgt": "fr", "k": 2, "retrieval": "csls"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["word"] for x in results] == words
    assert results[0]["translations"][0]["word"] == "m3"
    assert results[1]["error"]["code"] == "word_not_found"
    assert results[2]["translations"][0]["word"] == "m250"
    assert results[3]["translations"] == results[0]["translations"]
    assert results[4]["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("params, status, code", [
    ({"word": "w1", "src": "de", "tgt": "fr"}, 404, "space_not_found"),
    ({"word": "w1", "src": "fr", "tgt": "en"}, 404, "pair_not_found"),
    ({"word": "w1", "src": "en", "tgt": "en"}, 422, "invalid_input"),
    ({"word": "w1", "src": "en", "tgt": "fr", "k": 0}, 422, "invalid_input"),
    ({"word": "w1", "src": "en", "tgt": "fr", "k": 101}, 422, "invalid_input"),
    ({"word": "w1", "src": "en", "tgt": "fr", "retrieval": "magic"}, 422, "invalid_input"),
    ({"word": "", "src": "en", "tgt": "fr"}, 422, "invalid_input"),
    ({"word": "y" * 21, "src": "en", "tgt": "fr"}, 422, "invalid_input"),
    ({"src": "en", "tgt": "fr"}, 422, "invalid_input"),
    ({"word": "nope", "src": "en", "tgt": "fr"}, 404, "word_not_found"),
])
def test_single_word_errors(client, params, status, code):
    err = _assert_error(client.get("/v1/translate", params=params), status, code)
    if code == "pair_not_found":
        assert err["detail"]["pairs"] == ["en-fr"] and "en-fr" in err["message"]
    if code == "word_not_found":
        assert err["detail"] == {"word": "nope", "lang": "en"}


def test_batch_errors(client):
    _assert_error(client.post("/v1/translate", json={"words": ["w1"] * 51, "src": "en", "tgt": "fr"}),
                  413, "payload_too_large")
    _assert_error(client.post("/v1/translate", json={"words": ["w1"], "src": "en", "tgt": "fr", "k": 0}),
                  422, "invalid_input")
    _assert_error(client.post("/v1/translate", json={"words": ["w1"], "src": "xx", "tgt": "fr"}),
                  404, "space_not_found")
    _assert_error(client.post("/v1/translate", content=b"{not json", headers={"content-type": "application/json"}),
                  400, "bad_request")


def test_new_mapping_version_is_served_and_cache_not_stale(client, planted_spaces, tmp_path, redis_url):
    from services.alignment.mapping import LinearStage, Mapping
    from services.infra.redis import connect

    _, _, R, *_ = planted_spaces
    p = {"word": "w40", "src": "en", "tgt": "fr", "k": 1}
    first = client.get("/v1/translate", params=p).json()
    assert client.get("/v1/translate", params=p).json()["cached"] is True
    # Publish a different mapping the way alignment jobs do, and let the serving layer pick it up.
    perm = np.roll(np.eye(R.shape[0]), 3, axis=0)
    new = Mapping("procrustes", [LinearStage(R.astype(np.float64) @ perm)])
    path = tmp_path / "new.npz"
    new.save(path)
    redis = connect(redis_url)
    redis.set("vislex:mappings:en-fr", json.dumps({"version": new.version, "path": str(path)}))
    redis.sadd("vislex:mapping-pairs", "en-fr")
    runtime = client.app.state.runtime
    assert runtime.spaces.sync_from_redis(runtime.redis) == ["en-fr"]
    after = client.get("/v1/translate", params=p).json()
    assert after["mapping_version"] == new.version != first["mapping_version"]
    assert after["cached"] is False
    listed = client.get("/v1/spaces").json()
    en = next(s for s in listed["spaces"] if s["lang"] == "en")
    assert en["mappings"][0]["version"] == new.version


def test_cache_counters_in_metrics(client):
    p = {"word": "w77", "src": "en", "tgt": "fr"}
    client.get("/v1/translate", params=p)
    client.get("/v1/translate", params=p)
    metrics = client.get("/metrics").text
    assert 'vislex_cache_total{result="hit"}' in metrics and 'vislex_cache_total{result="miss"}' in metrics


def test_cache_disabled_never_reports_cached(make_client, planted_spaces, mapping_file):
    en, fr, *_ = planted_spaces
    with make_client(spaces={"en": str(en), "fr": str(fr)}, mappings={"en-fr": str(mapping_file[0])},
                     cache_enabled=False) as c:
        p = {"word": "w5", "src": "en", "tgt": "fr"}
        assert [c.get("/v1/translate", params=p).json()["cached"] for _ in range(2)] == [False, False]


def test_readiness_is_503_until_spaces_are_loaded(make_client, planted_spaces, mapping_file, monkeypatch):
    import app.wiring.serving as wiring

    release = threading.Event()
    real = wiring.new_registry

    def slow_build(settings, **kw):
        release.wait(20)
        return real(settings, **kw)

    monkeypatch.setattr(wiring, "new_registry", slow_build)
    en, fr, *_ = planted_spaces
    with make_client(background_load=True, spaces={"en": str(en), "fr": str(fr)},
                     mappings={"en-fr": str(mapping_file[0])}) as c:
        time.sleep(0.3)
        _assert_error(c.get("/readyz"), 503, "not_ready")
        err = _assert_error(c.get("/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr"}), 503, "unavailable")
        assert err["detail"]["component"] == "spaces"
        release.set()
        deadline = time.monotonic() + 20
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr"}).status_code == 200


def test_hot_get_route_keeps_the_metrics_label_and_auth_for_reads(client, make_client, planted_spaces, mapping_file):
    """GET /v1/translate is served by a plain Starlette route (app/routes/translate.py, HOT_ROUTES)."""
    assert client.get("/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr"}).status_code == 200
    assert 'route="/v1/translate",status="200"' in client.get("/metrics").text
    en, fr, *_ = planted_spaces
    key = "k" * 32
    with make_client(spaces={"en": str(en), "fr": str(fr)}, mappings={"en-fr": str(mapping_file[0])},
                     api_keys=[key], auth_reads=True) as secured:
        params = {"word": "w1", "src": "en", "tgt": "fr"}
        assert secured.get("/v1/translate", params=params).status_code == 401
        assert secured.get("/v1/translate", params=params, headers={"Authorization": f"Bearer {key}"}).status_code == 200
