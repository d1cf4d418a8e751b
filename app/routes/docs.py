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

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
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

    app.router.routes.extend([
        Route(DOCS_URL, swagger, methods=ANY_METHOD, include_in_schema=False),  # the handlers answer 405 themselves
        Route(OAUTH2_REDIRECT_URL, oauth2_redirect, methods=ANY_METHOD, include_in_schema=False),
        Route(REDOC_URL, redoc, methods=ANY_METHOD, include_in_schema=False),
    ])
    if folder is not None:
        app.mount(STATIC_URL, ReadOnlyFiles(directory=folder), name="docs-static")
    else:
        log.warning("API docs assets missing: /docs and /redoc answer 503", extra={"package": ASSETS_PACKAGE})
