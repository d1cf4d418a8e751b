"""API keys for writes (issue 19): 401 without a key, 403 with a wrong one, reads open unless VISLEX_AUTH_READS."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings

KEY = "k" * 24
OTHER = "o" * 24
# POSTs that only read (a query sent as a body): open like the GETs.
READ_POSTS = {("POST", "/v1/translate"), ("POST", "/v1/classify"), ("POST", "/v1/galleries/{gallery_id}/search"),
              ("POST", "/v1/captions/{collection_id}/search"), ("POST", "/v1/sentences/translate")}


def _write_routes(app):
    """(METHOD, path) of every operation that writes, from the OpenAPI document (routers are included lazily)."""
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE") and (method.upper(), path) not in READ_POSTS:
                yield method.upper(), path


def _url(path: str) -> str:
    return path.replace("{", "").replace("}", "")  # any value will do: the key is checked first


@pytest.fixture()
def protected(make_client):
    with make_client(api_keys=[KEY, OTHER]) as c:
        yield c


def test_every_write_needs_a_key(protected):
    routes = list(_write_routes(protected.app))
    assert ("POST", "/v1/spaces") in routes and ("DELETE", "/v1/alignments/{job_id}") in routes
    assert len(routes) >= 14
    for method, path in routes:
        r = protected.request(method, _url(path), json={})
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"
        r = protected.request(method, _url(path), json={}, headers={"Authorization": "Bearer wrong-key-wrong-key"})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        r = protected.request(method, _url(path), json={}, headers={"Authorization": f"Bearer {OTHER}"})
        assert r.status_code not in (401, 403), (method, path, r.text)


def test_a_key_in_another_scheme_is_not_accepted(protected):
    r = protected.post("/v1/spaces", json={"name": "x", "path": "/x"}, headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401


def test_reads_stay_open_and_writes_work_with_a_key(protected):
    assert protected.get("/v1/spaces").status_code == 200
    assert protected.post("/v1/translate", json={"words": ["a"], "src": "en", "tgt": "fr"}).status_code not in (401, 403)
    r = protected.post("/v1/spaces", data={"name": "mine"}, files={"file": ("m.vec", b"1 2\nchat 0.1 0.2\n")},
                       headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 201, r.text


def test_auth_reads_protects_reads_but_not_probes(make_client):
    with make_client(api_keys=[KEY], auth_reads=True) as client:
        assert client.get("/v1/spaces").status_code == 401
        assert client.get("/v1/spaces", headers={"Authorization": f"Bearer {OTHER}"}).status_code == 403
        assert client.get("/v1/spaces", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)
        paths = client.get("/openapi.json").json()["paths"]
        operation = paths["/v1/spaces"]["get"]
        assert operation["security"] == [{"bearerAuth": []}] and {"401", "403"} <= set(operation["responses"])
        assert "security" not in paths["/healthz"]["get"]  # probes stay open, and documented so


def test_without_keys_everything_is_open(make_client):
    with make_client() as client:
        r = client.post("/v1/spaces", json={"name": "x", "path": "/etc/passwd"})
        assert r.status_code == 422  # reached the route: no key needed


def test_openapi_declares_the_scheme_on_every_write(protected):
    schema = protected.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"]}
    for method, path in _write_routes(protected.app):
        operation = schema["paths"][path][method.lower()]
        assert operation.get("security") == [{"bearerAuth": []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert "security" not in schema["paths"]["/v1/spaces"]["get"]  # reads are open by default


def test_openapi_declares_no_scheme_when_no_key_is_configured(make_client):
    # A document that promised "no header, 401" while the server is open would mislead clients and fuzzers.
    with make_client() as client:
        schema = client.get("/openapi.json").json()
    assert "bearerAuth" not in schema.get("components", {}).get("securitySchemes", {})
    assert not any("security" in op for ops in schema["paths"].values() for op in ops.values())


def test_api_keys_setting_forms(monkeypatch, tmp_path):
    monkeypatch.setenv("VISLEX_API_KEYS", f'["{KEY}", "{OTHER}"]')
    assert load_settings().api_keys == [KEY, OTHER]
    monkeypatch.setenv("VISLEX_API_KEYS", f"{KEY},{OTHER}")
    assert load_settings().api_keys == [KEY, OTHER]
    keys = tmp_path / "keys"
    keys.write_text(f"# operators\n{KEY}\n\n{OTHER}\n")
    monkeypatch.setenv("VISLEX_API_KEYS", str(keys))
    assert load_settings().api_keys == [KEY, OTHER]
    assert KEY not in repr(load_settings())
    for bad in ("short", str(tmp_path / "missing"), f'["{KEY}", 3]'):
        monkeypatch.setenv("VISLEX_API_KEYS", bad)
        with pytest.raises(SettingsError, match="VISLEX_API_KEYS"):
            load_settings()
    monkeypatch.delenv("VISLEX_API_KEYS")
    monkeypatch.setenv("VISLEX_AUTH_READS", "true")
    with pytest.raises(SettingsError, match="VISLEX_AUTH_READS"):
        load_settings()


def test_serve_says_whether_writes_are_protected(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import vislex.supervisor
    from vislex.cli import app

    import services.observability

    monkeypatch.setattr(vislex.supervisor, "serve", lambda settings, env: None)
    # `serve` would point the root logger at the runner's stream, closed once it returns (later tests log).
    monkeypatch.setattr(services.observability, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("VISLEX_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(app, ["serve"]).output
    assert "writes are NOT protected" in out and "WARNING" not in out  # loopback by default
    out = runner.invoke(app, ["serve", "--host", "0.0.0.0"]).output
    assert "WARNING" in out and "beyond loopback" in out
    monkeypatch.setenv("VISLEX_API_KEYS", KEY)
    out = runner.invoke(app, ["serve", "--host", "0.0.0.0"]).output
    assert "writes need an API key (1 configured); reads are open" in out and "WARNING" not in out
