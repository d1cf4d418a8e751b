"""Request ids, access logs, latency metrics and load shedding (429 instead of a hang).

Load shedding counts *every* request from the moment the event loop starts it. A request answered
without awaiting anything (a translation-table hit) would otherwise enter and leave before the next
one starts, so the count never rose however many requests queued in the loop: each request yields
to the loop once after being counted, which lets every request already received register first.
Those over ``max_in_flight`` get a pre-encoded 429 (no routing, no JSON encoding), so a flood is
answered quickly and the probes (``/healthz``, ``/readyz``, ``/metrics``; never shed, never counted,
never delayed by that yield) stay fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from services.observability import IN_FLIGHT, REJECTED, REQUEST_SECONDS, request_id_var

log = logging.getLogger("vislex.access")
# Probes and scrapes must answer while the server is saturated: never shed, never counted as in flight.
UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Longer query strings get the contract's 414 (a word is at most max_word_length characters anyway).
MAX_QUERY_BYTES = 8192
_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and _ID_CHARS.issuperset(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


def _error_body(status: int, code: str, message: str, detail: dict) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "detail": detail}},
                      separators=(",", ":")).encode()


class RequestContextMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: ASGIApp, max_in_flight: int = 256, max_query_bytes: int = MAX_QUERY_BYTES):
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_query_bytes = max_query_bytes
        self.in_flight = 0
        self._overloaded = _error_body(429, "overloaded", f"more than {max_in_flight} requests in flight",
                                       {"max_in_flight": max_in_flight})
        self._too_long = _error_body(414, "uri_too_long", f"query string longer than {max_query_bytes} bytes",
                                     {"max_query_bytes": max_query_bytes})
        self._latency: dict[tuple[str, str, int], object] = {}  # histogram children, looked up once each

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope["headers"])
        rid_header = (b"x-request-id", rid.encode())
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 0  # 0 until the response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        async def serve() -> None:
            """Run the app; an unexpected exception becomes the contract's 500 -- sent from here, inside the
            request context, so it carries X-Request-ID (Starlette's outermost error middleware would not)."""
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error", extra={"method": scope.get("method"), "path": scope.get("path")})
                if status:  # headers already sent: nothing valid can follow; let the server drop the connection
                    raise
                response = error_response(500, "internal_error",
                                          "internal error; see the server logs for this request id",
                                          {"request_id": rid})
                await response(scope, receive, send_with_id)

        try:
            if len(scope.get("query_string", b"")) > self.max_query_bytes:
                await self._reject(send_with_id, 414, self._too_long)
            elif scope["path"] in UNSHED_PATHS:
                await serve()
            else:
                self.in_flight += 1
                IN_FLIGHT.inc()
                try:
                    await asyncio.sleep(0)  # let the requests queued behind this one be counted too
                    if self.in_flight > self.max_in_flight:
                        REJECTED.inc()
                        await self._reject(send_with_id, 429, self._overloaded, retry_after=True)
                    else:
                        await serve()
                finally:
                    self.in_flight -= 1
                    IN_FLIGHT.dec()
        finally:
            status = status or 500  # the app raised before responding (the server answers 500)
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], path, status)
            child = self._latency.get(key)
            if child is None:
                child = self._latency[key] = REQUEST_SECONDS.labels(scope["method"], path, str(status))
            child.observe(elapsed)  # type: ignore[attr-defined]
            # The one access line per request (uvicorn's own access log is switched off: configure_logging).
            if path not in ("/healthz", "/metrics") and log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "ms": round(elapsed * 1000, 3)})
            request_id_var.reset(token)

    @staticmethod
    async def _reject(send: Send, status: int, body: bytes, *, retry_after: bool = False) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
