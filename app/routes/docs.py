"""``/docs`` (Swagger UI) and ``/redoc`` served offline: their scripts and styles come from a package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from Google), so on a
machine without internet ``/docs`` is blank. The ``fastapi-offline`` package ships the same dist files
(``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``, a favicon); they are served
from ``/docs/static`` and the pages are FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html`` with
those local URLs, Google fonts off and Swagger UI's online validator off. The pages are plain Starlette
routes: like FastAPI's own docs they stay open when reads need a key (the document and its "Authorize"
button are how a user finds out).
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from app.routes.console import ANY_METHOD, READ_METHODS, ReadOnlyFiles, method_not_allowed

log = logging.getLogger(__name__)

DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL = "/docs", "/redoc", "/docs/oauth2-redirect"
STATIC_URL = "/docs/static"
ASSETS_PACKAGE = "fastapi-offline"


def assets_dir() -> Path | None:
    """The folder holding the Swagger UI / ReDoc dist files, or None when the package is not installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return folder if all((folder / name).is_file() for name in needed) else None


# ReDoc's sidebar shows a logo fetched from its CDN (the only load it makes from outside): the bundle is
# served with that URL pointing at the favicon next to it (relative: right under any root path).
REDOC_CDN_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
REDOC_LOCAL_LOGO = b'src:"docs/static/favicon.png"'


def _local_redoc_bundle(folder: Path) -> tuple[bytes, str]:
    data = (folder / "redoc.standalone.js").read_bytes().replace(REDOC_CDN_LOGO, REDOC_LOCAL_LOGO)
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _missing(request: Request) -> JSONResponse:
    return JSONResponse({"error": {"code": "unavailable", "message": f"the API documentation assets are not installed: "
                                   f"pip install {ASSETS_PACKAGE} (the OpenAPI document is at /openapi.json)",
                                   "detail": {"package": ASSETS_PACKAGE, "openapi": "/openapi.json"}}},
                        status_code=503, headers={"Retry-After": "1"})


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect``, ``/redoc`` and ``/docs/static`` (build the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not registered)."""
    folder = assets_dir()
    title = f"{app.title} - API"

    def _root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    async def swagger(request: Request) -> HTMLResponse:
        if request.method not in READ_METHODS:
            return method_not_allowed(request)
        if folder is None:
            return _missing(request)
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=title,
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            # validatorUrl null: no badge fetched from the online validator
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        if request.method not in READ_METHODS:
            return method_not_allowed(request)
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        if request.method not in READ_METHODS:
            return method_not_allowed(request)
        if folder is None:
            return _missing(request)
        root = _root(request)
        return get_redoc_html(openapi_url=root + app.openapi_url, title=title,
                              redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png", with_google_fonts=False)

    bundle = lru_cache(maxsize=1)(_local_redoc_bundle)

    async def redoc_js(request: Request) -> Response:
        if request.method not in READ_METHODS:
            return method_not_allowed(request)
        data, etag = bundle(folder)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(data, media_type="text/javascript; charset=utf-8",
                        headers={"ETag": etag, "Cache-Control": "no-cache"})

    if folder is not None:  # ahead of the static mount below
        app.router.routes.append(Route(f"{STATIC_URL}/redoc.standalone.js", redoc_js, methods=ANY_METHOD,
                                       include_in_schema=False))
    app.router.routes.extend([
        Route(DOCS_URL, swagger, methods=ANY_METHOD, include_in_schema=False),  # the handlers answer 405 themselves
        Route(OAUTH2_REDIRECT_URL, oauth2_redirect, methods=ANY_METHOD, include_in_schema=False),
        Route(REDOC_URL, redoc, methods=ANY_METHOD, include_in_schema=False),
    ])
    if folder is not None:
        app.mount(STATIC_URL, ReadOnlyFiles(directory=folder), name="docs-static")
    else:
        log.warning("API docs assets missing: /docs and /redoc answer 503", extra={"package": ASSETS_PACKAGE})
