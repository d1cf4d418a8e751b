"""`vislex worker --ping` (the compose healthcheck) answers 0 only while a real worker is alive on the Redis."""

from __future__ import annotations

import os
import subprocess
import sys

from services.infra.redis import connect
from tests.services.jobs.harness import (
    REPO_ROOT,
    WorkerProcess,
    jobs_redis_db_url,
    wait_for,
)


def _ping(url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VISLEX_REDIS_URL=url, VISLEX_LOG_JSON="false")
    cmd = [sys.executable, "-m", "vislex.cli", "worker", "--ping", *args]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_ping_succeeds_with_a_live_worker_and_fails_after_it_stops(redis_url, tmp_path):
    url = jobs_redis_db_url(redis_url, db=13)
    connect(url).flushdb()
    worker = WorkerProcess(url, tmp_path, queues="light", log_path=tmp_path / "worker.log")
    try:
        def answered():
            proc = _ping(url, "--ping-timeout", "1")
            return proc if proc.returncode == 0 else None

        ok = wait_for(answered, 90, interval=0.5, message="worker answering --ping")
        assert ok.stdout.startswith("ok: vislex-") and f"@{os.uname().nodename}" in ok.stdout, worker.tail()
    finally:
        worker.stop()
    gone = _ping(url, "--ping-timeout", "1")
    assert gone.returncode == 1 and "no worker answered" in gone.stderr


def test_ping_fails_when_no_worker_runs(redis_url):
    url = jobs_redis_db_url(redis_url, db=14)
    proc = _ping(url, "--ping-timeout", "0.5")
    assert proc.returncode == 1
    assert "no worker answered" in proc.stderr


def test_ping_fails_when_redis_is_unreachable():
    proc = _ping("redis://127.0.0.1:1/0", "--ping-timeout", "0.5")
    assert proc.returncode == 1
