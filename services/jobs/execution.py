"""Running one attempt of a job inside a worker: the public pieces every kind of job shares.

- :class:`Heartbeat` keeps ``job:{id}:heartbeat`` alive from a thread (an expired heartbeat means the worker
  died; the reaper then re-queues the job once or fails it ``worker_lost``);
- :class:`ProgressReporter` is the ``progress(stage, current, total, metrics)`` callback handed to the work:
  it stores progress (and the loss, when the metrics carry one) and raises :class:`~services.errors.Cancelled`
  on cancel, :class:`~services.errors.TimeLimitExceeded` past the job's limit and :class:`Superseded` when the
  attempt lost the job, so the work stops at its next boundary;
- :func:`execute` claims the attempt, runs a body with both, and records the outcome (succeeded with its
  result, cancelled, failed with a reason) -- any exception becomes a failed job, never one stuck ``running``.

The alignment runner (``services.jobs.runner``) and every registered job kind (``services.jobs.kinds``)
run through :func:`execute`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import redis

from services.errors import Cancelled, TimeLimitExceeded, VislexError
from services.jobs.store import JobRecord, JobStore, Publication

log = logging.getLogger(__name__)

ProgressFn = Callable[..., None]  # (stage, current, total, metrics=None); raises to stop the work


class Superseded(Exception):
    """This attempt lost the job to another one (the reaper re-queued it); stop quietly."""


class Heartbeat(threading.Thread):
    """Renews the job's heartbeat key every ``interval_s`` until ``halt`` is set (TTL: the store's, 3 intervals)."""

    def __init__(self, store: JobStore, job_id: str, worker: str, interval_s: float):
        super().__init__(name=f"vislex-heartbeat-{job_id}", daemon=True)
        self.store, self.job_id, self.worker, self.interval_s = store, job_id, worker, interval_s
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval_s):
            try:
                self.store.beat(self.job_id, self.worker)
            except redis.RedisError:  # a blip: the TTL (3 intervals) absorbs it
                log.warning("heartbeat failed", extra={"job_id": self.job_id})


def jsonable(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A flat dict with JSON values: numpy scalars become numbers, anything else unserialisable its ``str``."""
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[str(k)] = v
    return out


def json_safe(value: Any) -> Any:
    """Deeply JSON-safe: numpy scalars/arrays and paths converted, NaN/inf (a diverged loss) become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def loss_of(metrics: dict[str, Any]) -> float | None:
    """The loss a progress report carries (validation loss first), stored as the job's loss curve."""
    for key in ("validation_loss", "val_loss", "loss"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


class ProgressReporter:
    """The progress callback: records progress, raises Cancelled / TimeLimitExceeded / Superseded to stop."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, started_at: float, time_limit_s: float, *,
                 label: str = "alignment"):
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.started_at, self.time_limit_s = started_at, time_limit_s
        self.label = label
        self.stage: str | None = None
        self.stage_started_at = time.time()
        self.last: dict[str, Any] = {}

    def __call__(self, stage: str, current: int, total: int, metrics: dict | None = None) -> None:
        now = time.time()
        if stage != self.stage:
            self.stage, self.stage_started_at = stage, now
        metrics = jsonable(metrics or {})
        self.last = {"stage": stage, "current": int(current), "total": int(total), "metrics": metrics,
                     "stage_started_at": self.stage_started_at, "at": now}
        cancel, current_attempt = self.store.report_progress(self.job_id, self.attempt, self.last, loss_of(metrics))
        if not current_attempt:
            raise Superseded(self.job_id)
        if cancel:
            raise Cancelled(f"{self.label} job {self.job_id} cancelled", detail={"job_id": self.job_id})
        if now - self.started_at > self.time_limit_s:
            raise TimeLimitExceeded(f"time limit exceeded ({self.time_limit_s:g} s)",
                                    detail={"job_id": self.job_id, "time_limit_s": self.time_limit_s})


@dataclass
class Success:
    """What a job body returns when success must also publish something in the same atomic step."""

    result: dict[str, Any]
    publish: Publication | None = None


Body = Callable[[JobRecord, ProgressReporter], "dict[str, Any] | Success"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _soft_time_limit() -> type[BaseException]:
    try:
        from celery.exceptions import SoftTimeLimitExceeded
    except ImportError:  # pragma: no cover - celery is a dependency
        return TimeLimitExceeded
    return SoftTimeLimitExceeded


def execute(store: JobStore, job_id: str, attempt: int, body: Body, *, heartbeat_s: float,
            label: str = "alignment") -> dict[str, Any]:
    """Claim ``attempt`` of the job, run ``body(job, progress)`` with a heartbeat, record the outcome.

    Returns a small summary for Celery's result backend (the job's state lives in the store):
    ``{"job_id", "state"}`` or ``{"job_id", "skipped": why}`` (not claimed: stale, already final, superseded).
    """
    worker = worker_name()
    outcome = store.claim(job_id, attempt, worker)
    if outcome not in ("claimed", "reclaimed"):
        log.info("job not claimed", extra={"job_id": job_id, "attempt": attempt, "outcome": outcome})
        return {"job_id": job_id, "skipped": outcome}
    job = store.get(job_id)
    limit = float(job.spec["time_limit_s"])
    heartbeat = Heartbeat(store, job_id, worker, heartbeat_s)
    heartbeat.start()
    reporter = ProgressReporter(store, job_id, attempt, job.started_at or time.time(), limit, label=label)
    soft_limit = _soft_time_limit()
    try:
        out = body(job, reporter)
        success = out if isinstance(out, Success) else Success(out)
        done = {**reporter.last, "stage": "done", "current": 1, "total": 1, "at": time.time()}
        store.finish(job_id, attempt, "succeeded", result=success.result, progress=done, publish=success.publish)
        return {"job_id": job_id, "state": "succeeded"}
    except Superseded:
        log.warning("job attempt superseded", extra={"job_id": job_id, "attempt": attempt})
        return {"job_id": job_id, "skipped": "superseded"}
    except Cancelled as exc:
        store.finish(job_id, attempt, "cancelled", error={"code": "cancelled", "message": str(exc)})
        return {"job_id": job_id, "state": "cancelled"}
    except (TimeLimitExceeded, soft_limit):
        store.finish(job_id, attempt, "failed", error={"code": "time_limit_exceeded",
                                                        "message": f"time limit exceeded ({job.spec.get('time_limit_s')} s)"})
        return {"job_id": job_id, "state": "failed"}
    except VislexError as exc:
        store.finish(job_id, attempt, "failed", error={"code": exc.code, "message": exc.message,
                                                        "detail": jsonable(exc.detail)})
        return {"job_id": job_id, "state": "failed"}
    except Exception as exc:  # any bug becomes a failed job with its reason, never a job stuck 'running'
        log.exception("job crashed", extra={"job_id": job_id, "kind": label})
        store.finish(job_id, attempt, "failed", error={"code": "internal_error",
                                                        "message": f"{type(exc).__name__}: {exc}"})
        return {"job_id": job_id, "state": "failed"}
    finally:
        heartbeat.halt.set()
