"""The web console's static serving and the offline API docs (in-process; the browser tests are in tests/browser)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.console import STATIC_DIR
from app.routes.docs import assets_dir
from app.settings import Settings

KEY = "console-unit-key-0123456789"
# A URL with a scheme in a page or script is a load from outside the server (the SVG namespace is a name, not a load).
EXTERNAL = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", re.I)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The app without its lifespan: pages and files need no component (an API call would, and says so)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("console"), encoder_languages=[], clip_pretrained=None,
                        log_json=False)
    return TestClient(create_app(settings))


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def _imports(js: str) -> list[str]:
    return re.findall(r"""^import\s[^;]*?from\s+'(\./[^']+)';""", js, re.M)


def test_index_is_served_with_a_strict_policy_and_every_asset_it_names(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["cache-control"] == "no-cache"
    html = resp.text
    assert '<script type="module" src="console/app.js">' in html and not EXTERNAL.search(html)
    assets = [a for a in _assets(html) if not a.startswith("docs")]
    assert {"console/app.js", "console/app.css", "console/icon.svg"} <= set(assets)
    for asset in assets:
        r = client.get("/" + asset)
        assert r.status_code == 200 and r.content, asset
    assert client.get("/console/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/console/app.css").headers["content-type"].startswith("text/css")
    assert client.head("/").status_code == 200


def test_every_module_the_console_imports_is_shipped_and_nothing_loads_from_outside(client):
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        resp = client.get(f"/console/{name}")
        assert resp.status_code == 200, f"{name} is imported but not served"
        todo += [imp[2:] for imp in _imports(resp.text)]
    shipped = {p.name for p in STATIC_DIR.glob("*.js")}
    assert seen == shipped, f"modules never imported: {shipped - seen}"
    for path in STATIC_DIR.iterdir():
        assert not EXTERNAL.search(path.read_text(encoding="utf-8")), f"{path.name} names an outside URL"
    # every id the scripts look up exists in the page
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    wanted = {m for p in STATIC_DIR.glob("*.js") for m in re.findall(r"\$\('#([A-Za-z0-9_-]+)'\)", p.read_text())}
    assert wanted and wanted <= ids, f"scripts look up ids the page lacks: {wanted - ids}"


def test_console_paths_answer_in_the_error_contract(client):
    missing = client.get("/console/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for path in ("/", "/console/app.js", "/docs", "/redoc"):
        resp = client.post(path)
        assert resp.status_code == 405, path
        assert resp.headers["allow"] == "GET, HEAD" and resp.json()["error"]["code"] == "method_not_allowed"
    traversal = client.get("/console/..%2f..%2fsettings.py")
    assert traversal.status_code == 404


def test_docs_and_redoc_pages_load_only_local_assets(client):
    assert assets_dir() is not None, "fastapi-offline (the Swagger UI / ReDoc assets) is a dependency"
    for path, script in (("/docs", "/docs/static/swagger-ui-bundle.js"), ("/redoc", "/docs/static/redoc.standalone.js")):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        html = resp.text
        assert f'src="{script}"' in html and "/openapi.json" in html
        assert not EXTERNAL.search(html), f"{path} loads from outside: {EXTERNAL.findall(html)}"
        for asset in _assets(html):
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
    assert '"validatorUrl": null' in client.get("/docs").text  # no badge from the online validator
    assert "fonts.googleapis" not in client.get("/redoc").text
    assert client.get("/docs/oauth2-redirect").status_code == 200
    # ReDoc's one load from outside (its sidebar logo on a CDN) points at the local favicon instead
    bundle = client.get("/docs/static/redoc.standalone.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"cdn.redoc.ly" not in bundle.content and b'src:"docs/static/favicon.png"' in bundle.content
    assert b"cdn.redoc.ly" in (assets_dir() / "redoc.standalone.js").read_bytes()  # the package's copy has it
    assert client.get("/docs/static/redoc.standalone.js", headers={"If-None-Match": bundle.headers["etag"]}).status_code == 304
    assert client.get("/docs/static/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_pages_are_not_api_operations(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths) and not any(p.startswith("/console") for p in paths)
    assert "/v1/fingerprints/images/{name}" in paths


def test_pages_stay_open_when_reads_need_a_key(tmp_path, redis_url):
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_url, encoder_languages=[], clip_pretrained=None,
                        log_json=False, api_keys=[KEY], auth_reads=True)
    with TestClient(create_app(settings, background_load=False)) as client:
        for path in ("/", "/console/app.js", "/docs", "/redoc", "/docs/static/swagger-ui.css", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert client.get("/v1/spaces").status_code == 401  # where the console asks for the key
        assert client.get("/v1/spaces", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_docs_answer_503_naming_the_package_when_its_assets_are_missing(monkeypatch, tmp_path):
    import app.routes.docs as docs

    monkeypatch.setattr(docs, "assets_dir", lambda: None)
    client = TestClient(create_app(Settings(data_dir=tmp_path, encoder_languages=[], clip_pretrained=None, log_json=False)))
    for path in ("/docs", "/redoc"):
        resp = client.get(path)
        assert resp.status_code == 503 and resp.json()["error"]["detail"]["package"] == "fastapi-offline"
    assert client.get("/").status_code == 200


def test_package_data_ships_the_console():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    patterns = re.search(r'\[tool\.setuptools\.package-data\]\s*"\*" = \[([^\]]*)\]', text).group(1)
    for suffix in {p.suffix for p in STATIC_DIR.iterdir()}:
        assert f'"*{suffix}"' in patterns, f"{suffix} files of the console are not package data"
