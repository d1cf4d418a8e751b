"""A task goes through a real worker process on a real Redis and comes back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from services.jobs.celery_app import celery_app, configure, live_workers


@pytest.fixture()
def worker_process(redis_url, tmp_path):
    env = dict(os.environ, VISLEX_REDIS_URL=redis_url, VISLEX_DATA_DIR=str(tmp_path), VISLEX_LOG_JSON="false")
    proc = subprocess.Popen([sys.executable, "-m", "vislex.cli", "worker"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ping_task_round_trip(redis_url, worker_process):
    configure(redis_url)
    result = celery_app.send_task("vislex.ping", queue="light")
    reply = result.get(timeout=60)
    assert reply["pid"] != os.getpid()  # ran in another process
    assert result.state == "SUCCESS"
    deadline = time.monotonic() + 10
    while live_workers(celery_app, timeout=1.0) < 1 and time.monotonic() < deadline:
        pass
    assert live_workers(celery_app, timeout=1.0) == 1


def test_worker_without_redis_url_exits_with_named_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VISLEX_REDIS_URL"}
    env["VISLEX_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "vislex.cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "VISLEX_REDIS_URL" in proc.stderr
