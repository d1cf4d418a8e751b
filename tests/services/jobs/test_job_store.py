"""Job-state transitions against a real Redis: atomic creation, attempts, cancel, reaping, time limits."""

from __future__ import annotations

import threading
import time

import pytest

from services.errors import Cancelled, NotFound, TimeLimitExceeded
from services.jobs.runner import ProgressReporter
from services.jobs.service import job_id_for, reap_lost_jobs
from services.jobs.store import JobStore

SPEC = {"src": {"name": "en"}, "tgt": {"name": "fr"}, "method": "m", "seed": "identical", "time_limit_s": 60}


def test_job_id_is_content_address():
    a = job_id_for({"src": "f1", "tgt": "f2", "method": "walip+l1", "options": {"k": 1, "b": 2}})
    b = job_id_for({"options": {"b": 2, "k": 1}, "method": "walip+l1", "tgt": "f2", "src": "f1"})
    c = job_id_for({"src": "f1", "tgt": "f2", "method": "walip+l1", "options": {"k": 2, "b": 2}})
    assert a == b and a != c and len(a) == 24


def test_concurrent_creates_make_one_job(jobs_redis):
    store = JobStore(jobs_redis)
    results = []
    barrier = threading.Barrier(8)

    def submit():
        barrier.wait()
        results.append(store.create("j1", SPEC, pair="en-fr", method="m")[0])

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] + ["exists"] * 7
    assert store.active_ids() == ["j1"]
    assert store.list()[1] == 1


def test_claim_is_per_attempt_and_finish_rejects_stale_attempt(jobs_redis):
    store = JobStore(jobs_redis, heartbeat_ttl_s=0.3, max_retries=1)
    store.create("j2", SPEC, pair="en-fr", method="m")
    assert store.claim("j2", 2, "w") == "stale"
    assert store.claim("j2", 1, "w") == "claimed"
    assert store.claim("j2", 1, "w2") == "running"  # heartbeat alive: a duplicate delivery is skipped
    assert not store.finish("j2", 2, "succeeded", result={})
    assert store.finish("j2", 1, "succeeded", result={"ok": 1})
    job = store.get("j2")
    assert job.state == "succeeded" and job.result == {"ok": 1} and store.active_ids() == []
    assert not store.heartbeat_alive("j2")


def test_reaper_requeues_once_then_fails_worker_lost(jobs_redis):
    store = JobStore(jobs_redis, heartbeat_ttl_s=0.2, max_retries=1)
    sent = []
    store.create("j3", SPEC, pair="en-fr", method="m")
    assert store.claim("j3", 1, "w") == "claimed"
    assert reap_lost_jobs(store, lambda *a: sent.append(a)) == {"requeued": [], "failed": [], "resent": []}  # alive
    time.sleep(0.3)
    assert reap_lost_jobs(store, lambda *a: sent.append(a))["requeued"] == ["j3"]
    assert [s[:2] for s in sent] == [("j3", 2)]
    assert store.get("j3").state == "queued" and store.get("j3").retries == 1
    assert store.claim("j3", 1, "old-message") == "stale"  # the dead attempt's redelivery is ignored
    assert store.claim("j3", 2, "w") == "claimed"
    time.sleep(0.3)
    assert reap_lost_jobs(store, lambda *a: sent.append(a))["failed"] == ["j3"]
    job = store.get("j3")
    assert job.state == "failed" and job.error["code"] == "worker_lost" and len(sent) == 1


def test_celery_redelivery_after_lost_worker_reclaims_once(jobs_redis):
    store = JobStore(jobs_redis, heartbeat_ttl_s=0.2, max_retries=1)
    store.create("j4", SPEC, pair="en-fr", method="m")
    assert store.claim("j4", 1, "w") == "claimed"
    time.sleep(0.3)
    assert store.claim("j4", 1, "w2") == "reclaimed"
    time.sleep(0.3)
    assert store.claim("j4", 1, "w3") == "failed"
    assert store.get("j4").error["code"] == "worker_lost"


def test_cancel_queued_running_and_final(jobs_redis):
    store = JobStore(jobs_redis)
    store.create("q", SPEC, pair="en-fr", method="m")
    assert store.cancel("q") == "cancelled_now"
    assert store.cancel("q") == "cancelled"  # a second cancel finds it already cancelled
    assert store.claim("q", 1, "w") == "cancelled"  # its queued message is skipped
    store.create("r", SPEC, pair="en-fr", method="m")
    store.claim("r", 1, "w")
    assert store.cancel("r") == "cancelling"
    reporter = ProgressReporter(store, "r", 1, time.time(), 60)
    with pytest.raises(Cancelled):
        reporter("procrustes", 1, 5, {"validation_loss": 0.5})
    assert store.get("r").losses == [0.5]
    assert store.cancel("missing") == "missing"
    with pytest.raises(NotFound):
        store.get("missing")


def test_resubmitting_failed_job_starts_a_new_run(jobs_redis):
    store = JobStore(jobs_redis)
    store.create("f", SPEC, pair="en-fr", method="m")
    store.claim("f", 1, "w")
    store.finish("f", 1, "failed", error={"code": "x", "message": "boom"})
    assert store.create("f", SPEC, pair="en-fr", method="m") == ("requeued", 2)
    job = store.get("f")
    assert job.state == "queued" and job.error is None and job.attempt == 2 and job.runs == 2


def test_progress_enforces_time_limit(jobs_redis):
    store = JobStore(jobs_redis)
    store.create("t", SPEC, pair="en-fr", method="m")
    store.claim("t", 1, "w")
    reporter = ProgressReporter(store, "t", 1, time.time() - 5, time_limit_s=1)
    with pytest.raises(TimeLimitExceeded, match="time limit exceeded"):
        reporter("procrustes", 1, 5, {})


def test_list_filters_and_paginates(jobs_redis):
    store = JobStore(jobs_redis)
    for i in range(5):
        store.create(f"l{i}", SPEC, pair="en-fr" if i % 2 == 0 else "en-de", method="m")
    store.cancel("l0")
    page, total = store.list(pair="en-fr", offset=0, limit=2)
    assert total == 3 and [j.id for j in page] == ["l4", "l2"]
    assert [j.id for j in store.list(state="cancelled")[0]] == ["l0"]
