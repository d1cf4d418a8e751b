"""The one error contract: ``{"error": {"code", "message", "detail"}}`` with a status per error type."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services import errors as E

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[E.VislexError], int] = {
    E.BadRequest: 400,
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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(E.VislexError)
    async def _domain(request: Request, exc: E.VislexError) -> JSONResponse:
        status = status_for(exc)
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return error_response(status, exc.code, exc.message, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "bad_request", "request body is not valid JSON",
                                  {"errors": [{"field": _field(e["loc"]), "message": e["msg"]} for e in errors]})
        fields = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors]
        first = fields[0] if fields else {"field": "?", "message": "invalid"}
        return error_response(422, "invalid_input", f"{first['field']}: {first['message']}", {"errors": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see server logs with this request id")
