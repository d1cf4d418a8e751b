"""Recovery paths that need a real worker process but no API: reaping at worker start, Celery soft limit."""

from __future__ import annotations

import pytest

import tests.services.jobs.plugin_aligners  # noqa: F401  (the submitting side validates the test method)
from services.jobs.service import celery_sender
from tests.services.jobs.harness import (
    WorkerProcess,
    job_service,
    planted_request,
    wait_for,
)

HEARTBEAT_S = 0.3


@pytest.fixture()
def service(redis_url, tmp_path, planted_spaces):
    with job_service(redis_url, 5, tmp_path, planted_spaces, heartbeat_s=HEARTBEAT_S) as svc:
        yield svc


_request = planted_request


def test_worker_start_reaps_a_job_left_running_by_a_dead_worker(service, tmp_path):
    sent = []
    service.send_task = lambda *args: sent.append(args)  # the original message is lost with its worker
    view, created = service.submit(_request("reap-at-start", n_iter=2))
    assert created and sent and service.store.claim(view["id"], 1, "ghost-worker") == "claimed"
    wait_for(lambda: not service.store.heartbeat_alive(view["id"]), 5, message="ghost heartbeat expiry")
    assert service.view(view["id"])["state"] == "running"  # nobody has noticed yet: no API monitor here
    worker = WorkerProcess(service.url, tmp_path, queues="light", heartbeat_s=HEARTBEAT_S,
                           log_path=tmp_path / "worker.log")
    try:
        done = wait_for(lambda: (lambda v: v if v["state"] in ("succeeded", "failed") else None)(
            service.view(view["id"])), 30, interval=0.1, message="job recovered by the starting worker")
        assert done["state"] == "succeeded", (done, worker.tail())
        assert done["retries"] == 1 and done["attempt"] == 2
    finally:
        worker.stop()


def test_celery_soft_time_limit_stops_a_step_that_never_reaches_a_boundary(service, tmp_path):
    service.send_task = celery_sender(service.celery)
    # The step sleeps far longer than any wait below: only the soft limit can end it in time.
    view, _ = service.submit(_request("soft-limit", n_iter=1, sleep_s=120, time_limit_s=1))
    worker = WorkerProcess(service.url, tmp_path, queues="light", heartbeat_s=HEARTBEAT_S,
                           log_path=tmp_path / "worker.log")
    try:
        # Worker start-up (imports, pool fork) is not what is measured: on a loaded CI machine it
        # can take most of a minute, so wait for the job to start before timing the limit.
        wait_for(lambda: service.view(view["id"])["state"] != "queued", 90, interval=0.1,
                 message="worker to pick the job up")
        try:
            done = wait_for(lambda: (lambda v: v if v["state"] in ("succeeded", "failed") else None)(
                service.view(view["id"])), 30, interval=0.1, message="soft time limit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{worker.tail()}") from None
        assert done["state"] == "failed" and done["error"]["code"] == "time_limit_exceeded", (done, worker.tail())
        assert done["finished_at"] - done["started_at"] < 10
    finally:
        worker.stop()
