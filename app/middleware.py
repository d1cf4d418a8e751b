"""Request ids, access logs, latency metrics and load shedding (429 instead of a hang)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from services.observability import IN_FLIGHT, REJECTED, REQUEST_SECONDS, request_id_var

log = logging.getLogger("vislex.access")
# Probes and scrapes must answer while the server is saturated: never shed, never counted as in flight.
UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: ASGIApp, max_in_flight: int = 256):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        try:
            if scope.get("path") in UNSHED_PATHS:
                await self._serve(scope, receive, send_with_id, status_holder)
                return
            if self.in_flight >= self.max_in_flight:
                REJECTED.inc()
                response = error_response(429, "overloaded", f"more than {self.max_in_flight} requests in flight",
                                          {"max_in_flight": self.max_in_flight}, headers={"Retry-After": "1"})
                await response(scope, receive, send_with_id)
                return
            self.in_flight += 1
            IN_FLIGHT.inc()
            try:
                await self._serve(scope, receive, send_with_id, status_holder)
            finally:
                self.in_flight -= 1
                IN_FLIGHT.dec()
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], path, str(status_holder["status"])).observe(elapsed)
            if path not in ("/healthz", "/metrics"):
                log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                           "status": status_holder["status"], "ms": round(elapsed * 1000, 3)})
            request_id_var.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, status_holder: dict) -> None:
        """Run the app; an unexpected exception becomes the contract's 500 -- sent from here, inside the
        request context, so it carries X-Request-ID (Starlette's outermost error middleware would not)."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error", extra={"method": scope.get("method"), "path": scope.get("path")})
            if started:  # headers already sent: nothing valid can follow; let the server drop the connection
                raise
            status_holder["status"] = 500
            response = error_response(500, "internal_error",
                                      "internal error; see the server logs for this request id",
                                      {"request_id": request_id_var.get()})
            await response(scope, receive, send)
