"""The web console at ``/``: translate, alignment jobs, fingerprints and galleries in the browser.

Static files shipped inside the package (``app/console/static``: HTML, CSS and ES modules; no build
step at install or run time, nothing loaded from outside the server). The page talks to the public
API only -- the same endpoints, the same error contract -- so it needs nothing the API does not offer.
Plain Starlette routes: the page stays open when reads need a key (it is where the key is entered;
the console sends it as ``Authorization: Bearer``), and it is not an API operation (not in OpenAPI).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.errors import error_response

STATIC_DIR = Path(__file__).resolve().parents[1] / "console" / "static"
STATIC_URL = "/console"
# Everything from this server, nothing inline: a page that tried to load a CDN script would be refused.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'self'")
_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


READ_METHODS = ("GET", "HEAD")
# Routed for every method so the handler, not Starlette's default, answers the others (405 with its Allow).
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def method_not_allowed(request_or_scope) -> Response:
    """The contract's 405 for a page or file (these are not API operations: their methods are GET and HEAD)."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    return error_response(405, "method_not_allowed",
                          f"{scope['method']} not allowed on {scope['path']}; allowed: GET, HEAD",
                          headers={"Allow": "GET, HEAD"})


class ReadOnlyFiles(StaticFiles):
    """StaticFiles answering other methods with the contract's 405 (and its ``Allow``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in READ_METHODS:
            await method_not_allowed(scope)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _ConsoleFiles(ReadOnlyFiles):
    """Static files revalidated on every load (ETag / Last-Modified): an upgraded server is seen at once."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200):
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


async def console_index(request: Request) -> Response:
    """The console's page (``GET /``)."""
    if request.method not in READ_METHODS:
        return method_not_allowed(request)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


def install_console(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/console/*`` (its scripts, styles and icon)."""
    app.router.routes.append(Route("/", console_index, methods=ANY_METHOD, include_in_schema=False))
    app.mount(STATIC_URL, _ConsoleFiles(directory=STATIC_DIR), name="console")
