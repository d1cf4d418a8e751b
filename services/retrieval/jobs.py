"""uCLIP training jobs: the alignment job machinery (Redis job store, heartbeat, progress, cancel) for uCLIP.

The state machine is :class:`services.jobs.store.JobStore` under its own keys
(``vislex:uclip:job:{id}``), so uCLIP jobs never show up in (or confuse) alignment
listings and the alignment reaper never re-sends them as alignment tasks. The task body
(:func:`run_uclip_job`) claims the job, keeps a heartbeat, reports progress through the
same :class:`services.jobs.runner.ProgressReporter` (progress with the loss is stored after
every optimisation step, and cancel and time limit are checked there, so a cancelled run
stops before its next step), and runs :func:`services.retrieval.training.run_uclip_training`; on success the
new checkpoint becomes active (pointer file), and API processes swap to it without restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

import redis

from services.errors import Cancelled, Conflict, InvalidInput, NotFound, TimeLimitExceeded, VislexError
from services.jobs.runner import ProgressReporter, Superseded, _Heartbeat, _jsonable
from services.jobs.store import FINAL_STATES, STATES, JobRecord, JobStore

log = logging.getLogger(__name__)

UCLIP_TASK = "vislex.uclip_train"
SendTask = Callable[[str, int, dict[str, Any]], None]


class UclipJobStore(JobStore):
    """The job store under uCLIP's own keys."""

    INDEX = "vislex:uclip:jobs"
    ACTIVE = "vislex:uclip:jobs:active"

    @staticmethod
    def key(job_id: str) -> str:
        return f"vislex:uclip:job:{job_id}"

    def get(self, job_id: str) -> JobRecord:
        try:
            return super().get(job_id)
        except NotFound:
            raise NotFound(f"no uCLIP training job {job_id!r}", detail={"job_id": job_id}) from None


def celery_uclip_sender(app=None) -> SendTask:
    def send(job_id: str, attempt: int, spec: dict[str, Any]) -> None:
        from services.jobs.celery_app import celery_app

        limit = float(spec["time_limit_s"])
        (app or celery_app).send_task(UCLIP_TASK, args=[job_id, attempt], queue=spec.get("queue", "heavy"),
                                      task_id=f"uclip-{job_id}-{attempt}", soft_time_limit=limit + 5,
                                      time_limit=limit + 60)

    return send


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class UclipTrainingJobs:
    """API side of uCLIP training: submit (content-addressed), view, list, cancel, reap lost workers."""

    def __init__(self, client: redis.Redis, *, time_limit_s: float, heartbeat_s: float,
                 send_task: SendTask | None = None, max_retries: int = 1):
        self.redis = client
        self.time_limit_s = float(time_limit_s)
        self.heartbeat_s = float(heartbeat_s)
        self.store = UclipJobStore(client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)
        self.send_task = send_task or celery_uclip_sender()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, params: dict[str, Any], *, time_limit_s: float | None = None, queue: str = "heavy",
               force: bool = False) -> tuple[dict[str, Any], bool]:
        """(job view, created); identical params give the same job unless ``force``."""
        if queue not in ("light", "heavy"):
            raise InvalidInput("queue must be 'light' or 'heavy'", detail={"field": "queue"})
        limit = float(time_limit_s or self.time_limit_s)
        key = {"v": 1, "params": params, "nonce": uuid.uuid4().hex if force else None}
        job_id = "u" + hashlib.sha256(_canonical(key).encode()).hexdigest()[:23]
        spec = {"params": params, "time_limit_s": limit, "queue": queue}
        status, value = self.store.create(job_id, spec, pair="uclip", method="uclip")
        if status in ("created", "requeued"):
            self.send_task(job_id, int(value), spec)
            return self.view(job_id), True
        return self.view(job_id), False

    def view(self, job_id: str, job: JobRecord | None = None) -> dict[str, Any]:
        job = job or self.store.get(job_id)
        p = job.progress or {}
        params = job.spec.get("params", {})
        return {
            "id": job.id, "state": job.state, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "attempt": job.attempt, "retries": job.retries, "worker": job.worker,
            "cancel_requested": job.cancel_requested, "time_limit_s": job.spec.get("time_limit_s"),
            "inputs": {"images_dir": params.get("images_dir"), "text_encoder": params.get("text_encoder"),
                       "queries": len(params.get("queries") or []), "texts": len(params.get("texts") or []),
                       "queries_files": params.get("queries_files"), "texts_files": params.get("texts_files"),
                       "config": params.get("config") or {}},
            "progress": ({"stage": p.get("stage"), "current": p.get("current"), "total": p.get("total"),
                          "metrics": p.get("metrics") or {}} if p else None),
            "losses": job.losses,
            "result": ({k: v for k, v in (job.result or {}).items() if k != "history"}
                       if job.state == "succeeded" else None),
            "error": job.error if job.state in ("failed", "cancelled") else None,
        }

    def list(self, *, state: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {list(STATES)}", detail={"field": "state", "known": list(STATES)})
        jobs, total = self.store.list(state=state, offset=offset, limit=limit)
        return {"jobs": [self.view(j.id, j) for j in jobs], "total": total, "offset": offset, "limit": limit}

    def cancel(self, job_id: str) -> dict[str, Any]:
        outcome = self.store.cancel(job_id)
        if outcome == "missing":
            raise NotFound(f"no uCLIP training job {job_id!r}", detail={"job_id": job_id})
        if outcome in FINAL_STATES:
            raise Conflict(f"uCLIP training job {job_id} is already {outcome}", detail={"job_id": job_id, "state": outcome})
        return self.view(job_id)

    def reap(self) -> dict[str, list[str]]:
        from services.jobs.service import reap_lost_jobs

        return reap_lost_jobs(self.store, self.send_task)

    def start_monitor(self) -> None:
        """A daemon thread re-queueing (once) or failing jobs whose worker died."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.reap()
                except Exception:  # the monitor must outlive Redis blips
                    log.warning("uCLIP job reaper iteration failed", exc_info=True)

        self._thread = threading.Thread(target=loop, name="vislex-uclip-reaper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def run_uclip_job(client: redis.Redis, job_id: str, attempt: int, *, heartbeat_s: float,
                  max_retries: int = 1) -> dict[str, Any]:
    """Task body (in the worker): claim, heartbeat, train with progress/cancel, record the outcome."""
    from services.retrieval.training import run_uclip_training

    store = UclipJobStore(client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    outcome = store.claim(job_id, attempt, worker)
    if outcome not in ("claimed", "reclaimed"):
        return {"job_id": job_id, "skipped": outcome}
    job = store.get(job_id)
    spec = job.spec
    heartbeat = _Heartbeat(store, job_id, worker, heartbeat_s)
    heartbeat.start()
    reporter = ProgressReporter(store, job_id, attempt, job.started_at or time.time(), float(spec["time_limit_s"]))
    try:
        from celery.exceptions import SoftTimeLimitExceeded
    except ImportError:  # pragma: no cover
        SoftTimeLimitExceeded = TimeLimitExceeded  # type: ignore[misc]
    try:
        result = run_uclip_training(dict(spec["params"]), reporter)
        done = {**reporter.last, "stage": "done", "current": 1, "total": 1, "at": time.time()}
        store.finish(job_id, attempt, "succeeded", result=json.loads(_canonical(result)), progress=done)
        return {"job_id": job_id, "state": "succeeded"}
    except Superseded:
        return {"job_id": job_id, "skipped": "superseded"}
    except Cancelled as exc:
        store.finish(job_id, attempt, "cancelled", error={"code": "cancelled", "message": str(exc).replace("alignment", "uCLIP training")})
        return {"job_id": job_id, "state": "cancelled"}
    except (TimeLimitExceeded, SoftTimeLimitExceeded):
        store.finish(job_id, attempt, "failed", error={"code": "time_limit_exceeded",
                                                        "message": f"time limit exceeded ({spec.get('time_limit_s')} s)"})
        return {"job_id": job_id, "state": "failed"}
    except VislexError as exc:
        store.finish(job_id, attempt, "failed", error={"code": exc.code, "message": exc.message,
                                                        "detail": _jsonable(exc.detail)})
        return {"job_id": job_id, "state": "failed"}
    except Exception as exc:  # a bug becomes a failed job with its reason, never one stuck 'running'
        log.exception("uCLIP training job crashed", extra={"job_id": job_id})
        store.finish(job_id, attempt, "failed", error={"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
        return {"job_id": job_id, "state": "failed"}
    finally:
        heartbeat.halt.set()
