"""The Celery worker: ``run_worker(...)``, started by ``vislex worker`` (the one process entry point).

Prefork pool; nothing heavy is loaded in the parent (task modules, job kinds and plugin modules only).
Each pool process sets itself up in ``worker_process_init`` (own Redis connection, dies with its parent,
plugin imports) and loads word spaces and models lazily on its first job. At start the worker reaps jobs
of every kind whose worker was lost (expired heartbeat) so that a crashed deployment recovers without the API.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import redis
from celery.signals import worker_process_init, worker_ready

from services.infra.redis import connect
from services.jobs.celery_app import celery_app, configure

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# Settings belong to the process entry (``vislex worker`` builds them from app.settings);
# the domain never imports app/. Forked pool processes inherit the loader.
SettingsLoader = Callable[[], Any]
_SETTINGS_LOADER: SettingsLoader | None = None


@dataclass
class WorkerContext:
    redis_url: str
    data_dir: Path
    heartbeat_s: float
    imports: list[str] = field(default_factory=list)
    _client: redis.Redis | None = None
    _pid: int | None = None

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def settings_loader(self) -> SettingsLoader | None:
        """What ``run_worker`` was given to build the deployment's settings (None: started without one)."""
        return _SETTINGS_LOADER

    @property
    def redis(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():  # never share a socket across fork
            self._client, self._pid = connect(self.redis_url), os.getpid()
        return self._client


_CONTEXT: WorkerContext | None = None


def worker_context() -> WorkerContext:
    """This process's context (from the Celery config written by run_worker, else the environment)."""
    global _CONTEXT
    if _CONTEXT is None:
        conf = celery_app.conf
        _CONTEXT = WorkerContext(
            redis_url=conf.get("vislex_redis_url") or os.environ.get("VISLEX_REDIS_URL") or conf.broker_url,
            data_dir=Path(conf.get("vislex_data_dir") or os.environ.get("VISLEX_DATA_DIR", ".vislex")),
            heartbeat_s=float(conf.get("vislex_heartbeat_s") or os.environ.get("VISLEX_JOB_HEARTBEAT_S", 5.0)),
            imports=list(conf.get("vislex_imports") or []),
        )
    return _CONTEXT


def _import_plugins(names: Sequence[str]) -> None:
    for name in names:
        if name:
            importlib.import_module(name)


@worker_process_init.connect
def _init_pool_process(**_: object) -> None:
    """Per pool process: die with the parent (no orphan runs a job), fresh Redis, plugins."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    ctx = worker_context()
    ctx._client = None
    _import_plugins(ctx.imports)


@worker_ready.connect
def _reap_at_start(**_: object) -> None:
    """A (re)started worker recovers jobs of every kind left 'running' by a worker that died."""
    from services.jobs.kinds import reap_all_kinds
    from services.jobs.service import RESEND_GRACE_S, celery_sender, reap_lost_jobs
    from services.jobs.store import JobStore

    ctx = worker_context()
    client = connect(ctx.redis_url)
    try:
        done = reap_lost_jobs(JobStore(client, heartbeat_ttl_s=3 * ctx.heartbeat_s), celery_sender(),
                              queued_grace_s=RESEND_GRACE_S, broker=client)
        if done["requeued"] or done["failed"] or done["resent"]:
            log.warning("reaped lost jobs at worker start", extra=done)
        for kind, kind_done in reap_all_kinds(client, heartbeat_s=ctx.heartbeat_s).items():
            if any(kind_done.values()):
                log.warning("reaped lost jobs at worker start", extra={"kind": kind, **kind_done})
    except redis.RedisError:
        log.exception("could not reap lost jobs at start")
    finally:
        client.close()


def run_worker(redis_url: str, *, queues: str = "light,heavy", concurrency: int = 1,
               data_dir: str | Path | None = None, time_limit_s: int = 3600, heartbeat_s: float | None = None,
               loglevel: str = "info", imports: Sequence[str] = (), hostname: str | None = None,
               settings_loader: SettingsLoader | None = None) -> None:
    """Run a Celery worker (prefork pool) consuming ``queues`` until stopped (SIGTERM = warm shutdown).

    ``settings_loader`` builds the deployment's settings for jobs that need them (``seed=fingerprints``:
    images, CLIP per language, prompt templates).
    """
    global _CONTEXT, _SETTINGS_LOADER
    if not redis_url:
        raise ValueError("the worker needs the API's Redis: set VISLEX_REDIS_URL")
    if data_dir is None:
        data_dir = os.environ.get("VISLEX_DATA_DIR", ".vislex")
    # Other features' tasks read these in the pool processes.
    os.environ["VISLEX_DATA_DIR"] = str(Path(data_dir).resolve())
    os.environ["VISLEX_REDIS_URL"] = redis_url
    if heartbeat_s is None:
        heartbeat_s = float(os.environ.get("VISLEX_JOB_HEARTBEAT_S", "5"))
    env_imports = [m for m in os.environ.get("VISLEX_WORKER_IMPORTS", "").split(",") if m]
    configure(redis_url, time_limit_s=time_limit_s)
    celery_app.conf.update(
        vislex_redis_url=redis_url, vislex_data_dir=str(Path(data_dir).resolve()),
        vislex_heartbeat_s=float(heartbeat_s), vislex_imports=list(imports) + env_imports,
    )
    _CONTEXT = None
    _SETTINGS_LOADER = settings_loader
    import services.jobs.tasks  # noqa: F401  (registers the task names in this process)

    # Plugins are imported here too (not only in each pool process): one may register a job kind, whose task
    # the consumer (this process) must know to accept its messages.
    _import_plugins(celery_app.conf.vislex_imports)

    celery_app.worker_main([
        "worker", "-Q", queues, "-c", str(concurrency), "--pool", "prefork", "--loglevel", loglevel.upper(),
        "-n", hostname or f"vislex-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])


def ping_workers(redis_url: str, *, timeout: float = 2.0, host: str | None = None) -> list[str]:
    """Node names of the live workers on ``redis_url`` answering a broadcast ping within ``timeout``.

    ``host`` keeps only workers of that host (node names are ``vislex-<pid>@<host>``): a container's
    healthcheck asks about its own worker, not any worker sharing the broker.
    """
    from celery import Celery

    app = configure(redis_url, app=Celery("vislex-ping"))
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    names = sorted(name for reply in replies for name in reply)
    if host is not None:
        names = [n for n in names if n.rpartition("@")[2] == host]
    return names


def ping_main(redis_url: str, *, timeout: float = 2.0, any_host: bool = False) -> int:
    """Exit status of a worker healthcheck: 0 when a worker (of this host unless ``any_host``) answers, else 1."""
    if not redis_url:
        print("error: VISLEX_REDIS_URL: the ping goes through the workers' Redis", file=sys.stderr)
        return 2
    try:
        names = ping_workers(redis_url, timeout=timeout, host=None if any_host else socket.gethostname())
    except Exception as exc:  # noqa: BLE001 -- broker unreachable (kombu/redis/OS errors): unhealthy
        print(f"unhealthy: cannot reach the broker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not names:
        print("unhealthy: no worker answered", file=sys.stderr)
        return 1
    print("ok: " + " ".join(names))
    return 0

