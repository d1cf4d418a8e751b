"""The probe listener: ``GET /healthz`` and ``GET /readyz`` on their own port and thread (issue 19).

Under overload every request on the API port -- a probe included -- waits for uvicorn's one event loop
(1,000 clients on 2 cores: a /healthz on a fresh connection took 3.2 s, past any probe timeout). This
listener is a stdlib ``ThreadingHTTPServer`` on ``VISLEX_PROBE_PORT`` (same host as the API), served by
its own threads, so a Kubernetes/compose probe is answered in milliseconds while the API sheds load.
The answers are built by the same functions as the API's own probes (``app.routes.system.health`` and
``readiness``) and rendered by the same ``JSONResponse``: same body bytes, status and ``Retry-After``.
Started and stopped by the app lifespan (``app/main.py``); the API keeps its own /healthz and /readyz.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastapi.responses import JSONResponse

from app.runtime import Runtime
from app.settings import Settings

log = logging.getLogger(__name__)

PATHS = ("/healthz", "/readyz")


class ProbePortError(RuntimeError):
    """The probe port cannot be bound; the message names VISLEX_PROBE_PORT and how to fix it."""


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "detail": {}}}, status_code=status,
                        headers=headers or None)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    server_version = "vislex-probes"
    sys_version = ""
    timeout = 10  # an idle keep-alive connection gives its thread back

    def _answer(self, head_only: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            from app.routes.system import health

            response = JSONResponse(health().model_dump())
        elif path == "/readyz":
            from app.routes.system import readiness

            response = readiness(self.server.runtime)
        else:
            response = _error(404, "not_found", f"{path} is not served on the probe port (only /healthz, /readyz)")
        self._send(response, head_only)

    def _send(self, response: JSONResponse, head_only: bool = False) -> None:
        self.send_response(response.status_code)
        for name, value in response.raw_headers:
            self.send_header(name.decode("latin-1"), value.decode("latin-1"))
        self.end_headers()
        if not head_only:
            self.wfile.write(response.body)

    def _handle(self, head_only: bool) -> None:
        try:
            self._answer(head_only)
        except Exception:  # a probe must never hang: answer 500 in the contract
            log.exception("probe failed", extra={"path": self.path})
            self._send(_error(500, "internal_error", "the probe failed; see the logs"), head_only)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head_only=True)

    def _not_allowed(self) -> None:
        self.close_connection = True  # a body we do not read must not be parsed as the next request
        self._send(_error(405, "method_not_allowed", f"{self.command} is not allowed on the probe port",
                          allow="GET, HEAD"))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        log.debug("probe " + format, *args)  # probes every few seconds: no access line at info


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck probe never holds shutdown
    block_on_close = False

    def __init__(self, address: tuple[str, int], runtime: Runtime):
        self.runtime = runtime
        super().__init__(address, _Handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class ProbeServer:
    """A running probe listener; :meth:`start` binds it (or raises :class:`ProbePortError`), :meth:`stop` frees it."""

    def __init__(self, server: _Server):
        self._server = server
        self.host, self.port = server.server_address[:2]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="vislex-probes", daemon=True)

    @classmethod
    def start(cls, settings: Settings, runtime: Runtime) -> "ProbeServer | None":
        """Bind ``settings.host``:``settings.probe_port`` and serve from a thread; None when the port is 0 (off)."""
        if not settings.probe_port:
            return None
        server_cls = _Server6 if ":" in settings.host else _Server
        try:
            server = server_cls((settings.host, settings.probe_port), runtime)
        except OSError as exc:
            raise ProbePortError(
                f"cannot serve probes on {settings.host}:{settings.probe_port} (VISLEX_PROBE_PORT): {exc}; "
                "set VISLEX_PROBE_PORT to a free port, or 0 to serve /healthz and /readyz on the API port only"
            ) from None
        probes = cls(server)
        probes._thread.start()
        log.info("probes served", extra={"host": probes.host, "port": probes.port})
        return probes

    def stop(self) -> None:
        """Stop serving and close the socket: the port is free again when this returns."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def describe(settings: Settings) -> str:
    """What ``vislex serve`` says at start about where the probes are served."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if not settings.probe_port:
        return (f"vislex: probes /healthz, /readyz on the API port only (http://{host}:{settings.port}; "
                "VISLEX_PROBE_PORT=0)")
    return (f"vislex: probes /healthz, /readyz on http://{host}:{settings.probe_port} (VISLEX_PROBE_PORT, own "
            f"thread, answers under overload) and on the API port {settings.port}")
