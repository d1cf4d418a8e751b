"""A queued job never stays queued forever: a failed or lost task message is re-sent (real Redis, real broker)."""

from __future__ import annotations

import pytest

import tests.services.jobs.plugin_aligners  # noqa: F401  (the submitting side validates the test method)
from services.errors import InvalidInput
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
    with job_service(redis_url, 12, tmp_path, planted_spaces, heartbeat_s=HEARTBEAT_S, resend_grace_s=0.0) as svc:
        yield svc


_request = planted_request


class FlakySender:
    """Raises on the first ``failures`` sends, then delegates (or records)."""

    def __init__(self, failures: int = 1, then=None):
        self.failures, self.then, self.calls = failures, then, []

    def __call__(self, job_id, attempt, spec):
        self.calls.append((job_id, attempt))
        if len(self.calls) <= self.failures:
            raise ConnectionError("broker hiccup")
        if self.then is not None:
            self.then(job_id, attempt, spec)


def test_failed_send_at_submit_keeps_the_job_and_the_reaper_resends_it(service):
    sender = FlakySender(failures=1)
    service.send_task = sender
    view, created = service.submit(_request("flaky-submit"))
    assert created and view["state"] == "queued"  # accepted: the job record is kept, not rolled back
    job = service.store.get(view["id"])
    assert job.sent_at is None and service.redis.hget(service.store.key(job.id), "send_failures") == b"1"

    done = service.reap()
    assert done["resent"] == [job.id] and sender.calls == [(job.id, 1), (job.id, 1)]  # same attempt re-sent
    assert service.store.get(job.id).sent_at is not None


def test_reaper_leaves_a_message_waiting_in_the_broker_alone_and_resends_a_lost_one(service):
    service.send_task = celery_sender(service.celery)  # real messages in the real broker; no worker consumes
    view, created = service.submit(_request("waiting"))
    assert created and service.redis.llen("light") == 1
    for _ in range(3):  # grace 0: only the broker lookup stops a double send
        assert service.reap()["resent"] == []
    assert service.redis.llen("light") == 1

    service.redis.delete("light")  # the broker lost the message (e.g. Redis restarted without it)
    assert service.reap()["resent"] == [view["id"]]
    assert service.redis.llen("light") == 1
    assert f"{view['id']}-1".encode() in service.redis.lindex("light", 0)


def test_a_job_that_cannot_be_sent_fails_with_the_reason_instead_of_staying_queued(service):
    service.send_task = FlakySender(failures=100)
    service.max_send_failures = 3
    view, _ = service.submit(_request("never-sent"))
    service.reap()
    assert service.view(view["id"])["state"] == "queued"
    service.reap()
    failed = service.view(view["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "enqueue_failed"
    assert "broker hiccup" in failed["error"]["message"]
    assert view["id"] not in service.store.active_ids()


def test_job_whose_first_send_failed_runs_on_a_real_worker(service, tmp_path):
    service.send_task = FlakySender(failures=1, then=celery_sender(service.celery))
    service.resend_grace_s = 0.5
    view, created = service.submit(_request("flaky-e2e", n_iter=2))
    assert created and service.redis.llen("light") == 0  # nothing reached the broker
    service.start_monitor()
    worker = WorkerProcess(service.url, tmp_path, queues="light", heartbeat_s=HEARTBEAT_S,
                           log_path=tmp_path / "worker.log")
    try:
        def finished():
            current = service.view(view["id"])
            return current if current["state"] in ("succeeded", "failed") else None

        done = wait_for(finished, 60, interval=0.1, message="job re-sent by the monitor and run")
        assert done["state"] == "succeeded", (done, worker.tail())
        assert done["attempt"] == 1 and done["retries"] == 0
    finally:
        worker.stop()


def test_time_limit_above_the_configured_maximum_is_rejected(service):
    with pytest.raises(InvalidInput) as err:
        service.submit(_request("too-long", time_limit_s=61))
    assert err.value.detail["field"] == "options.time_limit_s" and err.value.detail["max"] == 60
    view, created = service.submit(_request("at-max", time_limit_s=60))
    assert created and view["time_limit_s"] == 60
