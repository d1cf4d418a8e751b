"""The one error contract: ``{"error": {"code", "message", "detail"}}`` with a status per error type."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from services import errors as E

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[E.VislexError], int] = {
    E.BadRequest: 400,
    E.Unauthorized: 401,
    E.Forbidden: 403,
    E.NotFound: 404,
    E.Conflict: 409,
    E.PayloadTooLarge: 413,
    E.UnsupportedMedia: 415,
    E.InvalidInput: 422,
    E.Overloaded: 429,
    E.Unavailable: 503,
    E.Cancelled: 409,
    E.TimeLimitExceeded: 503,
}

_DESCRIPTIONS = {
    400: "Malformed request (e.g. body is not valid JSON)",
    401: "An API key is required (Authorization: Bearer <key>)",
    403: "The API key is not accepted",
    404: "Unknown resource (language, pair, word, job, gallery)",
    409: "Conflicts with the resource's current state",
    413: "Batch or upload over the configured limit",
    415: "Upload is not a decodable image",
    422: "Invalid parameter; detail names the field",
    429: "Overloaded: too many requests in flight, retry later",
    503: "Not ready, or a needed component (encoder, Redis) is unavailable",
}


class ErrorInfo(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorInfo


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for a route; 422, 429 and 503 apply to every route and are always added."""
    wanted = sorted(set(statuses) | {422, 429, 503})
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in wanted}


def add_bad_json_responses(app: FastAPI) -> None:
    """Document 400 on every operation that reads a request body (any of them can receive malformed JSON).

    Applied to the generated schema (routers may be included lazily, so their routes are not final here).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    operation.setdefault("responses", {}).setdefault("400", {
                        "description": _DESCRIPTIONS[400], "content": {"application/json": {"schema": error_ref}}})
                    # Any body can cross VISLEX_MAX_JSON_BYTES / VISLEX_MAX_UPLOAD_BYTES (app/body_limit.py).
                    operation["responses"].setdefault("413", {
                        "description": _DESCRIPTIONS[413], "content": {"application/json": {"schema": error_ref}}})
                if isinstance(operation, dict) and operation.get("security"):
                    # Reads secured app-wide by VISLEX_AUTH_READS (writes list these in their responses= already).
                    for status in ("401", "403"):
                        operation.setdefault("responses", {}).setdefault(status, {
                            "description": _DESCRIPTIONS[int(status)],
                            "content": {"application/json": {"schema": error_ref}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def redis_unavailable(exc: Exception) -> E.Unavailable:
    """Redis refused, dropped or did not answer in time (killed, paused, restarting): the contract's 503."""
    return E.Unavailable(f"redis is unavailable ({type(exc).__name__}); retry shortly", code="redis_unavailable",
                         detail={"component": "redis"})


def status_for(exc: E.VislexError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_response(status: int, code: str, message: str, detail: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "detail": detail or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (routes are split per method, e.g. GET and POST)."""
    app = request.app
    table = getattr(app.state, "allowed_methods", None)
    if table is None:  # built once, from the schema: included routers are not flat in app.routes
        table = app.state.allowed_methods = [
            (compile_path(path)[0], sorted(m.upper() for m in ops if m in _HTTP_METHODS))
            for path, ops in app.openapi().get("paths", {}).items()]
    methods = {m for regex, ms in table if regex.match(request.url.path) for m in ms}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(E.VislexError)
    async def _domain(request: Request, exc: E.VislexError) -> JSONResponse:
        status = status_for(exc)
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        if status == 401:  # RFC 6750: tell the client which scheme to use
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(status, exc.code, exc.message, exc.detail, headers)

    # Every Redis-backed route at once (jobs, spaces, cache writes): a Redis outage is a 503, never a 500.
    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable", extra={"path": request.url.path, "error": str(exc)})
        return await _domain(request, redis_unavailable(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "bad_request", "request body is not valid JSON",
                                  {"errors": [{"field": _field(e["loc"]), "message": e["msg"]} for e in errors]})
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and not _is_json(content_type) and any(tuple(e["loc"])[:1] == ("body",) for e in errors):
            # FastAPI does not parse a non-JSON body, then fails it as "not a dictionary": the media type is the fault.
            return error_response(415, "unsupported_media_type", f"send application/json, not {content_type!r}",
                                  {"content_type": content_type})
        fields = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors]
        first = fields[0] if fields else {"field": "?", "message": "invalid"}
        return error_response(422, "invalid_input", f"{first['field']}: {first['message']}", {"errors": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names the first matching route's methods only: name the path's
            allowed = _allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            message = f"{request.method} not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see server logs with this request id")
