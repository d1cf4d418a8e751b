"""``vislex serve``: embedded Redis + one worker + the API, stopped together.

With no external Redis the supervisor starts a real redis-server (persisting
under the data directory) and one worker process, then runs uvicorn in this
process. Ctrl-C / SIGTERM stops uvicorn, then the worker's whole process group,
then Redis -- in that order, so nothing is orphaned and nothing half-written is
left. Children also get a parent-death signal, so even a SIGKILL of the
supervisor leaves no process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from app.settings import Settings
from services.infra.redis import EmbeddedRedis, die_with_parent, embedded_redis_dir

log = logging.getLogger(__name__)


def _child_preexec() -> None:
    os.setsid()  # own process group: shutdown can signal the worker and its pool children at once
    die_with_parent()


class Supervisor:
    def __init__(self, settings: Settings, env: dict[str, str]):
        self.settings = settings
        self.env = dict(env)
        self.redis: EmbeddedRedis | None = None
        self.worker: subprocess.Popen | None = None

    def start_backends(self) -> str:
        url = self.settings.redis_url
        if url is None:
            self.redis = EmbeddedRedis(embedded_redis_dir(self.settings.data_dir))
            url = self.redis.start()
            self.env["VISLEX_REDIS_URL"] = url
            self.env["VISLEX_REDIS_EMBEDDED"] = "1"  # the API reports it as embedded, not external
            self.worker = subprocess.Popen([sys.executable, "-m", "vislex.cli", "worker"], env=self.env,
                                           stdin=subprocess.DEVNULL, preexec_fn=_child_preexec)
            log.info("worker started", extra={"pid": self.worker.pid})
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("VISLEX_")})
        return url

    def run_api(self) -> None:
        import uvicorn

        from app.http_protocol import ContractHttpToolsProtocol

        # Requests uvicorn's parser rejects get the JSON error contract too (not its plain-text 400).
        config = uvicorn.Config("app.main:app_from_env", factory=True, host=self.settings.host,
                                port=self.settings.port, access_log=False, log_config=None,
                                timeout_graceful_shutdown=10, http=ContractHttpToolsProtocol)
        uvicorn.Server(config).run()

    def stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None and worker.poll() is None:
            try:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            except ProcessLookupError:
                pass
        if worker is not None:  # pool children left by a worker that died first
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def auth_notices(settings: Settings) -> list[str]:
    """What ``vislex serve`` says at start about API keys: whether writes are protected, a warning when exposed."""
    if settings.api_keys:
        reads = "reads too (VISLEX_AUTH_READS)" if settings.auth_reads else "reads are open"
        return [f"vislex: writes need an API key ({len(settings.api_keys)} configured); {reads}"]
    notices = ["vislex: writes are NOT protected: VISLEX_API_KEYS is unset, so anyone who reaches the API "
               "can register spaces, run jobs and delete galleries"]
    if settings.host not in _LOOPBACK and not settings.host.startswith("127."):
        notices.append(f"WARNING: vislex binds {settings.host}:{settings.port}, beyond loopback, without API keys; "
                       "set VISLEX_API_KEYS or bind 127.0.0.1")
    return notices


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(settings: Settings, env: dict[str, str]) -> None:
    """Run until interrupted; always tear down what was started."""
    sup = Supervisor(settings, env)
    # Until uvicorn takes over signal handling, SIGTERM must still unwind through ``finally``.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        sup.start_backends()
        signal.signal(signal.SIGTERM, previous)  # uvicorn installs its own handlers from here on
        sup.run_api()
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
