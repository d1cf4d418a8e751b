"""The job-kind machinery (services/jobs/kinds.py) on a real Redis: one test kind (plugin_kinds.sleepy) run
through KindJobs (API side) and run_kind_job (worker side) -- states, content addresses, cancel, time limit,
failures, artifacts, lost workers and lost messages -- and a real worker recovering a kind's job at start."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from services.errors import Conflict, InvalidInput, NotFound
from services.jobs.kinds import KindJobs, get_kind, job_id_for, load_kinds, registered, run_kind_job
from services.jobs.store import JobStore
from tests.services.jobs import harness
from tests.services.jobs.harness import WorkerProcess, jobs_redis_db_url, wait_for
from tests.services.jobs.plugin_kinds import CALLS, GATES, SLEEPY

HB = 0.1  # heartbeat interval: a claimed job with no beating worker is lost after 3 intervals


@pytest.fixture()
def jobs(jobs_redis, tmp_path):
    sent: list[tuple[str, int]] = []
    jobs = KindJobs(SLEEPY, jobs_redis, time_limit_s=60, heartbeat_s=HB, data_dir=tmp_path,
                    send_task=lambda job_id, attempt, spec: sent.append((job_id, attempt)))
    jobs.sent = sent
    yield jobs
    jobs.close()


def _run(jobs, job_id, attempt=1):
    return run_kind_job(SLEEPY, jobs.redis, job_id, attempt, heartbeat_s=HB)


def _in_thread(jobs, job_id, attempt=1):
    out = {}
    thread = threading.Thread(target=lambda: out.update(_run(jobs, job_id, attempt)), daemon=True)
    thread.start()
    return thread, out


def test_queued_running_succeeded_with_progress_losses_and_artifact(jobs, tmp_path):
    GATES["ok"] = threading.Event()
    view, created = jobs.submit({"steps": 3, "gate": "ok"})
    assert created and view["state"] == "queued" and view["kind"] == "sleepy" and view["queue"] == "light"
    assert jobs.sent == [(view["id"], 1)] and view["id"].startswith("s") and len(view["id"]) == 24
    assert jobs.store.get(view["id"]).sent_at is not None  # the send was recorded (the reaper trusts it)
    thread, out = _in_thread(jobs, view["id"])
    running = wait_for(lambda: (lambda v: v if v["progress"] and v["state"] == "running" else None)(
        jobs.view(view["id"])), 10, message="running with progress")
    assert running["progress"]["current"] == 1 and running["losses"] == [1.0] and running["result"] is None
    assert running["worker"] and running["started_at"] >= running["created_at"]
    GATES["ok"].set()
    thread.join(10)
    assert out == {"job_id": view["id"], "state": "succeeded"}
    done = jobs.view(view["id"])
    assert done["state"] == "succeeded" and done["progress"]["stage"] == "done"
    assert done["losses"] == pytest.approx([1.0, 0.5, 1 / 3])
    path = tmp_path / "sleepy" / f"{view['id']}.bin"  # located under the data dir, by job id
    assert done["inputs"]["out"] == str(path) and done["result"]["file"] == str(path)
    assert done["result"]["metrics"] == {"final_loss": pytest.approx(1 / 3), "diverged": None}  # NaN: null
    artifact_path, sha = jobs.artifact(view["id"])
    assert artifact_path == path.resolve() and sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert done["result"]["artifact"]["bytes"] == path.stat().st_size
    assert _run(jobs, view["id"]) == {"job_id": view["id"], "skipped": "succeeded"}  # a duplicate delivery


def test_resubmission_is_content_addressed(jobs):
    a, created = jobs.submit({"steps": 2, "x": {"b": 1, "a": 2}})
    again, created_again = jobs.submit({"x": {"a": 2, "b": 1}, "steps": 2})
    assert created and not created_again and again["id"] == a["id"] and len(jobs.sent) == 1
    assert jobs.submit({"steps": 3, "x": {"b": 1, "a": 2}})[0]["id"] != a["id"]
    forced, created_forced = jobs.submit({"steps": 2, "x": {"b": 1, "a": 2}}, force=True)
    assert created_forced and forced["id"] != a["id"]
    assert job_id_for(SLEEPY, {"steps": 2, "x": {"a": 2, "b": 1}}) == a["id"]  # the id is the params' hash
    # a failed job with the same inputs runs again: a new attempt, sent again
    failing, _ = jobs.submit({"steps": 2, "fail": "crash"})
    assert _run(jobs, failing["id"])["state"] == "failed"
    rerun, created_rerun = jobs.submit({"steps": 2, "fail": "crash"})
    assert created_rerun and rerun["id"] == failing["id"] and rerun["state"] == "queued" and rerun["attempt"] == 2
    assert jobs.sent[-1] == (failing["id"], 2) and rerun["error"] is None


def test_cancel_queued_running_and_final(jobs):
    queued, _ = jobs.submit({"steps": 2, "tag": "q"})
    assert jobs.cancel(queued["id"])["state"] == "cancelled"
    assert _run(jobs, queued["id"]) == {"job_id": queued["id"], "skipped": "cancelled"}  # its message is skipped
    GATES["cancel"] = threading.Event()
    view, _ = jobs.submit({"steps": 5, "gate": "cancel"})
    thread, out = _in_thread(jobs, view["id"])
    wait_for(lambda: jobs.view(view["id"])["progress"], 10, message="first progress report")
    assert jobs.cancel(view["id"])["cancel_requested"]
    n_calls = len(CALLS)
    GATES["cancel"].set()
    thread.join(10)
    done = jobs.view(view["id"])
    assert out["state"] == "cancelled" and done["state"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert "sleepy test job" in done["error"]["message"]
    assert done["progress"]["current"] == 2 and len(done["losses"]) == 2  # stopped at the report after step 2
    assert len(CALLS) == n_calls and not (jobs.data_dir / "sleepy" / f"{view['id']}.bin").exists()
    with pytest.raises(Conflict) as err:
        jobs.cancel(view["id"])
    assert err.value.detail["state"] == "cancelled"
    with pytest.raises(NotFound, match="no sleepy test job"):
        jobs.cancel("nope")
    with pytest.raises(Conflict):
        jobs.artifact(view["id"])


def test_time_limit_fails_the_job_and_submissions_are_capped(jobs):
    view, _ = jobs.submit({"steps": 100, "sleep_s": 0.05}, time_limit_s=0.3)
    started = time.monotonic()
    assert _run(jobs, view["id"])["state"] == "failed"
    done = jobs.view(view["id"])
    assert done["error"]["code"] == "time_limit_exceeded" and time.monotonic() - started < 3
    assert 0 < done["progress"]["current"] < 100
    for limit in (61, 0, -1, float("inf"), True):
        with pytest.raises(InvalidInput) as err:
            jobs.submit({"steps": 1}, time_limit_s=limit)
        assert err.value.detail["field"] == "time_limit_s"
    with pytest.raises(InvalidInput) as err:
        jobs.submit({"steps": 1}, queue="gpu")
    assert err.value.detail["field"] == "queue"
    with pytest.raises(InvalidInput) as err:  # the kind's own validation, at submission
        jobs.submit({"steps": 0})
    assert err.value.detail == {"field": "steps"}


@pytest.mark.parametrize("params, code", [
    ({"fail": "invalid"}, "invalid_input"),
    ({"fail": "crash"}, "internal_error"),
    ({"no_artifact": True}, "artifact_missing"),
])
def test_failures_are_recorded_with_their_reason(jobs, params, code):
    view, _ = jobs.submit({"steps": 3, **params})
    assert _run(jobs, view["id"])["state"] == "failed"
    done = jobs.view(view["id"])
    assert done["state"] == "failed" and done["error"]["code"] == code and done["result"] is None
    assert jobs.store.active_ids() == []
    if code == "internal_error":
        assert "boom at step 2" in done["error"]["message"]


def test_a_crashed_worker_is_reaped_requeued_once_then_failed(jobs):
    view, _ = jobs.submit({"steps": 2})
    assert jobs.store.claim(view["id"], 1, "ghost-worker") == "claimed"  # ... and the worker dies: no heartbeat
    assert jobs.reap() == {"requeued": [], "failed": [], "resent": []}  # heartbeat still alive
    wait_for(lambda: not jobs.store.heartbeat_alive(view["id"]), 5, message="heartbeat expiry")
    assert jobs.view(view["id"])["state"] == "running"
    assert jobs.reap()["requeued"] == [view["id"]]
    assert jobs.sent[-1] == (view["id"], 2) and jobs.view(view["id"])["state"] == "queued"
    assert _run(jobs, view["id"], attempt=1)["skipped"] == "stale"  # the dead attempt's redelivery
    assert jobs.store.claim(view["id"], 2, "ghost-again") == "claimed"  # the retry dies too
    jobs.start_monitor()  # now the monitor thread notices by itself
    failed = wait_for(lambda: (lambda v: v if v["state"] == "failed" else None)(jobs.view(view["id"])), 5,
                      message="monitor fails the job")
    assert failed["error"]["code"] == "worker_lost" and failed["retries"] == 1 and len(jobs.sent) == 2


def test_a_message_that_never_reached_the_broker_is_resent(jobs_redis, tmp_path):
    calls = []

    def flaky(job_id, attempt, spec):
        calls.append((job_id, attempt))
        if len(calls) == 1:
            raise ConnectionError("broker down")

    jobs = KindJobs(SLEEPY, jobs_redis, time_limit_s=60, heartbeat_s=HB, data_dir=tmp_path, send_task=flaky,
                    resend_grace_s=0)
    view, created = jobs.submit({"steps": 1})
    assert created and view["state"] == "queued" and jobs.store.get(view["id"]).sent_at is None
    assert jobs.reap()["resent"] == [view["id"]] and calls == [(view["id"], 1)] * 2
    assert jobs.store.get(view["id"]).sent_at is not None


def test_kinds_keep_to_their_own_keys(jobs, jobs_redis):
    view, _ = jobs.submit({"steps": 1})
    assert jobs_redis.exists(f"vislex:sleepy:job:{view['id']}") and not jobs_redis.exists(f"vislex:job:{view['id']}")
    assert JobStore(jobs_redis).list()[1] == 0  # alignment listings do not see it
    assert {"uclip", "clip", "sleepy"} <= {k.name for k in load_kinds()} == {k.name for k in registered()}
    uclip = KindJobs("uclip", jobs_redis, time_limit_s=60, heartbeat_s=HB, send_task=lambda *a: None)
    assert uclip.list()["total"] == 0 and jobs.list()["total"] == 1
    with pytest.raises(NotFound, match="no uCLIP training job"):
        uclip.view(view["id"])
    with pytest.raises(NotFound):
        get_kind("nope")


def test_a_starting_worker_recovers_a_kinds_job_left_by_a_dead_one(redis_url, tmp_path, monkeypatch):
    """A real `vislex worker` (the kind comes from a VISLEX_WORKER_IMPORTS module, as any plugin's would)
    finds a job whose worker died, re-queues it and runs it."""
    from services.infra.redis import connect

    # a database of its own: tests/app/test_alignments.py keeps a session-long worker on db 7 (queue "light")
    # that, without this test's plugin, would take the re-queued message (CI failure, 2026-12-03)
    url = jobs_redis_db_url(redis_url, db=9)
    client = connect(url)
    client.flushdb()
    monkeypatch.setattr(harness, "PLUGIN", f"{harness.PLUGIN},tests.services.jobs.plugin_kinds")
    jobs = KindJobs(SLEEPY, client, time_limit_s=60, heartbeat_s=0.3, data_dir=tmp_path,
                    send_task=lambda *a: None)  # the original message is lost with its worker
    view, _ = jobs.submit({"steps": 2})
    assert jobs.store.claim(view["id"], 1, "ghost-worker") == "claimed"
    wait_for(lambda: not jobs.store.heartbeat_alive(view["id"]), 5, message="ghost heartbeat expiry")
    worker = WorkerProcess(url, tmp_path, queues="light", heartbeat_s=0.3, log_path=tmp_path / "worker.log")
    try:
        try:
            done = wait_for(lambda: (lambda v: v if v["state"] in ("succeeded", "failed") else None)(
                jobs.view(view["id"])), 90, interval=0.1, message="job recovered by the starting worker")
        except AssertionError as e:
            raise AssertionError(f"{e}\njob: {jobs.view(view['id'])}\nworker log: {worker.tail()}") from None
        assert done["state"] == "succeeded", (done, worker.tail())
        assert done["retries"] == 1 and done["attempt"] == 2 and done["losses"] == [1.0, 0.5]
        assert jobs.artifact(view["id"])[0].read_bytes() == b"trained 2"
    finally:
        worker.stop()
        client.flushdb()


@pytest.mark.parametrize("name", ["", "Clip", "clip-2", "clíp", "job", "mappings"])
def test_kind_names_that_would_clash_or_break_keys_are_refused(name):
    from services.jobs.kinds import JobKind, register

    with pytest.raises(ValueError):
        register(JobKind(name=name, label="x", task_name="vislex.x", run=lambda params, progress: {}))


def test_a_worker_knows_every_kind_the_api_submits():
    """Workers build their task table from ``services.jobs.tasks`` (BUILTIN_KIND_MODULES); the API submits
    Globetrotter trainings too (app/wiring/sentences.py). Before the fix a real `vislex worker` had no
    ``vislex.globetrotter_train`` task: the job stayed queued until its time limit."""
    import subprocess
    import sys

    code = ("import services.jobs.tasks as t; from services.jobs.kinds import registered; "
            "print(sorted(k.task_name for k in registered() if k.task_name in t.celery_app.tasks))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=harness.REPO_ROOT).stdout
    for task in ("vislex.uclip_train", "vislex.clip_train", "vislex.globetrotter_train"):
        assert task in out, out
