"""Helpers for job tests: real Celery worker subprocesses (own process group, killed in teardown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PLUGIN = "tests.services.jobs.plugin_aligners"


def jobs_redis_db_url(url: str, db: int) -> str:
    """Same server, another database: job tests never flush the shared db 0 under other tests' feet.

    Databases in use (one owner each; a worker left on a database takes any message sent there):
    5 worker recovery, 6 jobs conftest, 7 app alignments (session-long worker), 9 job kinds, 11 schema fuzz,
    12 job resend, 13/14 worker ping."""
    base, _, last = url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{url.rstrip('/')}/{db}"


class WorkerProcess:
    """``vislex worker`` (as ``python -m vislex.cli worker``) in its own process group."""

    def __init__(self, redis_url: str, data_dir: Path, *, queues: str = "light", concurrency: int = 1,
                 heartbeat_s: float = 0.5, log_path: Path | None = None):
        env = dict(os.environ)
        env.update({
            "VISLEX_REDIS_URL": redis_url, "VISLEX_DATA_DIR": str(data_dir), "VISLEX_WORKER_QUEUES": queues,
            "VISLEX_WORKER_CONCURRENCY": str(concurrency), "VISLEX_JOB_HEARTBEAT_S": str(heartbeat_s),
            "VISLEX_WORKER_IMPORTS": PLUGIN, "VISLEX_LOG_LEVEL": "warning",
            "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        })
        self.log_path = log_path
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "vislex.cli", "worker"], cwd=REPO_ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if log_path:
            out.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool processes): a machine dying mid-job."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
        # Pool children die with their parent (PDEATHSIG); make sure of it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, n: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def wait_for(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


PLANTED_SEEDS = [[f"w{i}", f"m{i}"] for i in range(40)]  # planted_spaces' words: en w{i} <-> fr m{i}


def planted_request(tag: str, **options) -> dict:
    """A test_procrustes job on the planted en/fr spaces; ``tag`` makes its content address unique."""
    return {"src": "en", "tgt": "fr", "method": "test_procrustes", "seed": "dictionary", "dictionary": PLANTED_SEEDS,
            "options": {"tag": tag, **options}}


@contextmanager
def job_service(redis_url: str, db: int, tmp_path: Path, planted_spaces, *, heartbeat_s: float, **kwargs):
    """A JobService on its own Redis database with a Celery app of its own (no broker pool shared with
    another test's database), over the planted en/fr spaces; ``svc.url`` is that database's URL."""
    from celery import Celery

    from services.infra.redis import connect
    from services.jobs.celery_app import configure
    from services.jobs.service import JobService

    url = jobs_redis_db_url(redis_url, db=db)
    client = connect(url)
    client.flushdb()
    celery = configure(url, time_limit_s=60, app=Celery(f"vislex-test-db{db}"))
    en_path, fr_path, *_ = planted_spaces
    svc = JobService(client, artifacts_dir=tmp_path / "artifacts", uploads_dir=tmp_path / "uploads",
                     normalize="unit,center,unit", max_vocab=None, time_limit_s=60, heartbeat_s=heartbeat_s,
                     max_upload_bytes=1 << 20, configured_spaces={"en": str(en_path), "fr": str(fr_path)},
                     celery=celery, **kwargs)
    svc.url = url
    try:
        yield svc
    finally:
        svc.close()
        client.flushdb()
