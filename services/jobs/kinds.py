"""Job kinds: the one public interface every kind of background job registers with.

A kind (uCLIP training, CLIP training, ...) is one module that builds a :class:`JobKind` -- its name, its
spec validation, its task body ``run(params, progress) -> result``, how its inputs and result are shown,
which result field names its downloadable artifact -- and calls :func:`register`. Everything else is shared:

- :class:`KindJobStore`: the job store (``services.jobs.store``: atomic Lua transitions, attempts, cancel
  flag, heartbeat, loss curve) under the kind's own keys ``vislex:{name}:job:{id}``, so kinds never show up
  in each other's listings and a reaper never sends one kind's job as another's task;
- :class:`KindJobs` (API side): content-addressed submission (identical params give the same job unless
  ``force``), views, listing, cancel, the artifact of a succeeded job, and a monitor thread that re-queues
  (once) or fails jobs whose worker died and re-sends jobs whose task message was lost;
- :func:`run_kind_job` (worker side): claim, heartbeat, progress with cancel and time limit, outcome --
  :func:`services.jobs.execution.execute`, the same as alignment jobs;
- a Celery task per kind named ``kind.task_name``, created by :func:`register`.

Workers import the built-in kind modules (:data:`BUILTIN_KIND_MODULES`) and ``VISLEX_WORKER_IMPORTS``;
alignments keep their specialised service (``services.jobs.service``) on the same store and execution.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import redis

from services.errors import Conflict, InvalidInput, NotFound, VislexError
from services.jobs.execution import ProgressFn, execute, json_safe, sha256_file
from services.jobs.recovery import MAX_SEND_FAILURES, RESEND_GRACE_S, SendTask, reap_lost_jobs, send_job
from services.jobs.store import FINAL_STATES, STATES, JobRecord, JobStore

log = logging.getLogger(__name__)

QUEUES = ("light", "heavy")
# Modules defining the built-in kinds; importing one registers its kind (and its Celery task).
BUILTIN_KIND_MODULES = ("services.retrieval.jobs", "services.jobs.clip_jobs", "services.sentences.jobs")


@dataclass(frozen=True)
class JobKind:
    """What a kind of job is; see the module docstring. Only ``name``, ``label``, ``task_name`` and ``run``
    are required; the hooks default to showing params and result as they are."""

    name: str  # unique, lower case: Redis keys vislex:{name}:..., task ids {name}-{job id}-{attempt}
    label: str  # in messages: "uCLIP training job u12... cancelled", "no CLIP training job 'x'"
    task_name: str  # the Celery task running one attempt
    run: Callable[[dict[str, Any], ProgressFn], dict[str, Any]]  # (params, progress) -> JSON-able result
    id_prefix: str = ""  # job ids are this prefix + hex digits of the content address (24 characters in all)
    default_queue: str = "heavy"
    # API side, at submission: params -> normalised params (raises InvalidInput); they are the content address.
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # (params, job id, data dir) -> the params the worker gets: where the job writes, under the deployment's
    # data dir (not part of the content address).
    locate: Callable[[dict[str, Any], str, Path | None], dict[str, Any]] | None = None
    inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # the view's "inputs" (default: params)
    result_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # the view's "result" (default: all)
    progress_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # extra progress fields
    artifact: str | None = None  # the result field holding the path of the file a succeeded job offers

    @property
    def key_prefix(self) -> str:
        return f"vislex:{self.name}:"


# Names whose key prefix other vislex keys use (vislex:job:{id}, vislex:jobs, vislex:mappings:..., ...).
_RESERVED = frozenset({"job", "jobs", "mappings", "mapping", "spaces", "space"})
_KINDS: dict[str, JobKind] = {}
_TASKS: dict[str, Any] = {}


def register(kind: JobKind) -> JobKind:
    """Make ``kind`` known to this process (API: submissions; worker: its Celery task). Idempotent by name."""
    bare = kind.name.replace("_", "")
    if not (bare.isascii() and bare.isalnum()) or kind.name != kind.name.lower() or kind.name in _RESERVED:
        raise ValueError(f"job kind name {kind.name!r}: lower-case ASCII letters, digits and '_' only, "
                         f"none of {sorted(_RESERVED)}")
    if kind.default_queue not in QUEUES:
        raise ValueError(f"job kind {kind.name}: default_queue must be one of {QUEUES}")
    _KINDS[kind.name] = kind
    _TASKS[kind.name] = _celery_task(kind)
    return kind


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise NotFound(f"unknown job kind {name!r}", detail={"kind": name, "known": sorted(_KINDS)}) from None


def registered() -> list[JobKind]:
    return [_KINDS[name] for name in sorted(_KINDS)]


def load_kinds(modules: Iterable[str] = BUILTIN_KIND_MODULES) -> list[JobKind]:
    """Import the modules defining kinds (each registers its own); returns every kind registered."""
    for module in modules:
        importlib.import_module(module)
    return registered()


def task_of(kind: JobKind | str) -> Any:
    """The Celery task of a registered kind."""
    return _TASKS[kind if isinstance(kind, str) else kind.name]


class KindJobStore(JobStore):
    """The job store under a kind's own keys."""

    def __init__(self, kind: JobKind, client: redis.Redis, **kwargs: Any):
        self.kind = kind
        self.INDEX = f"{kind.key_prefix}jobs"
        self.ACTIVE = f"{kind.key_prefix}jobs:active"
        super().__init__(client, **kwargs)

    def key(self, job_id: str) -> str:  # type: ignore[override]  (the base's is a staticmethod)
        return f"{self.kind.key_prefix}job:{job_id}"

    def get(self, job_id: str) -> JobRecord:
        try:
            return super().get(job_id)
        except NotFound:
            raise NotFound(f"no {self.kind.label} job {job_id!r}", detail={"job_id": job_id}) from None


def celery_sender(kind: JobKind, app=None) -> SendTask:
    """Send the kind's task through Celery (``app``: one bound to the API's Redis) with the job's time limits."""

    def send(job_id: str, attempt: int, spec: dict[str, Any]) -> None:
        from services.jobs.celery_app import celery_app

        limit = float(spec["time_limit_s"])
        # The progress callback enforces the limit at every report; Celery's soft limit (a signal) catches a
        # run stuck inside one long step, its hard limit a run ignoring that.
        (app or celery_app).send_task(kind.task_name, args=[job_id, attempt],
                                      queue=spec.get("queue", kind.default_queue),
                                      task_id=f"{kind.name}-{job_id}-{attempt}",
                                      soft_time_limit=limit * 1.05 + 5, time_limit=limit * 1.1 + 60)

    return send


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def job_id_for(kind: JobKind, params: dict[str, Any], *, nonce: str | None = None) -> str:
    """Content address: the same kind and params always give the same id (a ``nonce`` forces a new one)."""
    digest = hashlib.sha256(_canonical({"v": 1, "params": params, "nonce": nonce}).encode()).hexdigest()
    return kind.id_prefix + digest[:24 - len(kind.id_prefix)]


class KindJobs:
    """API side of one kind: submit (content-addressed), view, list, cancel, artifact, reap lost workers."""

    def __init__(self, kind: JobKind | str, client: redis.Redis, *, time_limit_s: float, heartbeat_s: float,
                 send_task: SendTask | None = None, max_retries: int = 1, celery=None,
                 data_dir: str | Path | None = None, resend_grace_s: float = RESEND_GRACE_S, max_send_failures: int = MAX_SEND_FAILURES):
        self.kind = get_kind(kind) if isinstance(kind, str) else kind
        self.redis = client
        self.time_limit_s = float(time_limit_s)
        self.heartbeat_s = float(heartbeat_s)
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.store = KindJobStore(self.kind, client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)
        self.send_task = send_task or celery_sender(self.kind, celery)
        self.resend_grace_s = float(resend_grace_s)
        self.max_send_failures = int(max_send_failures)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- submission ------------------------------------------------------------------
    def submit(self, params: dict[str, Any], *, time_limit_s: float | None = None, queue: str | None = None,
               force: bool = False) -> tuple[dict[str, Any], bool]:
        """(job view, created); identical params give the same job (created False) unless ``force``.

        A failed or cancelled job with the same params runs again (new attempt); a send that fails leaves the
        job queued, and the monitor re-sends it (or fails it ``enqueue_failed`` after repeated failures).
        """
        queue = queue or self.kind.default_queue
        if queue not in QUEUES:
            raise InvalidInput(f"queue must be one of {list(QUEUES)}", detail={"field": "queue", "known": list(QUEUES)})
        limit = self.time_limit_s if time_limit_s is None else time_limit_s
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not 0 < limit < float("inf"):
            raise InvalidInput("time_limit_s must be a positive number", detail={"field": "time_limit_s"})
        if limit > self.time_limit_s:  # the broker's visibility timeout is sized for the configured maximum
            raise InvalidInput(f"time_limit_s must be at most {self.time_limit_s:g} (VISLEX_JOB_TIME_LIMIT_S)",
                               detail={"field": "time_limit_s", "max": self.time_limit_s})
        params = json_safe(self.kind.validate(dict(params)) if self.kind.validate else dict(params))
        job_id = job_id_for(self.kind, params, nonce=uuid.uuid4().hex if force else None)
        located = json_safe(self.kind.locate(dict(params), job_id, self.data_dir)) if self.kind.locate else params
        spec = {"params": located, "time_limit_s": float(limit), "queue": queue}
        status, value = self.store.create(job_id, spec, pair=self.kind.name, method=self.kind.name)
        if status in ("created", "requeued"):
            send_job(self.store, self.send_task, job_id, int(value), spec, max_failures=self.max_send_failures)
            return self.view(job_id), True
        return self.view(job_id), False

    # ---- reads -------------------------------------------------------------------------
    def view(self, job_id: str, job: JobRecord | None = None) -> dict[str, Any]:
        job = job or self.store.get(job_id)
        kind, p = self.kind, job.progress or {}
        params = job.spec.get("params", {})
        progress = None
        if p:
            progress = {"stage": p.get("stage"), "current": p.get("current"), "total": p.get("total"),
                        "metrics": p.get("metrics") or {}}
            if kind.progress_view is not None:
                progress.update(kind.progress_view(p))
        result = None
        if job.state == "succeeded" and job.result is not None:
            result = kind.result_view(job.result) if kind.result_view else dict(job.result)
        return json_safe({
            "id": job.id, "kind": kind.name, "state": job.state, "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at, "attempt": job.attempt,
            "retries": job.retries, "worker": job.worker, "cancel_requested": job.cancel_requested,
            "time_limit_s": job.spec.get("time_limit_s"), "queue": job.spec.get("queue"),
            "inputs": kind.inputs(params) if kind.inputs else params,
            "progress": progress, "losses": job.losses, "result": result,
            "error": job.error if job.state in ("failed", "cancelled") else None,
        })

    def list(self, *, state: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {list(STATES)}", detail={"field": "state", "known": list(STATES)})
        jobs, total = self.store.list(state=state, offset=offset, limit=limit)
        return {"jobs": [self.view(j.id, j) for j in jobs], "total": total, "offset": offset, "limit": limit}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one at its next progress report; 409 when final."""
        outcome = self.store.cancel(job_id)
        if outcome == "missing":
            raise NotFound(f"no {self.kind.label} job {job_id!r}", detail={"job_id": job_id})
        if outcome in FINAL_STATES:
            raise Conflict(f"{self.kind.label} job {job_id} is already {outcome}",
                           detail={"job_id": job_id, "state": outcome})
        return self.view(job_id)

    def artifact(self, job_id: str) -> tuple[Path, str]:
        """(path, sha256) of a succeeded job's artifact: 409 before success, 404 when the file is gone."""
        job = self.store.get(job_id)
        info = (job.result or {}).get("artifact") if job.state == "succeeded" else None
        if not info:
            raise Conflict(f"{self.kind.label} job {job_id} has no result (state {job.state})",
                           detail={"job_id": job_id, "state": job.state})
        path = Path(info["path"])
        if not path.is_file():
            raise NotFound(f"the artifact of {self.kind.label} job {job_id} is gone", detail={"job_id": job_id})
        return path, info["sha256"]

    # ---- background: reaper --------------------------------------------------------------
    def reap(self) -> dict[str, list[str]]:
        return reap_lost_jobs(self.store, self.send_task, queued_grace_s=self.resend_grace_s, broker=self.redis,
                              max_send_failures=self.max_send_failures)

    def start_monitor(self) -> None:
        """A daemon thread re-queueing (once) or failing jobs whose worker died, re-sending lost messages."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.reap()
                except Exception:  # the monitor must outlive Redis blips
                    log.warning("job reaper iteration failed", exc_info=True, extra={"kind": self.kind.name})

        self._thread = threading.Thread(target=loop, name=f"vislex-{self.kind.name}-reaper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _describe_artifact(kind: JobKind, result: dict[str, Any]) -> dict[str, Any]:
    path = result.get(kind.artifact) if kind.artifact else None
    if not path or not Path(path).is_file():
        raise VislexError(f"{kind.label} finished without writing its {kind.artifact}", code="artifact_missing",
                          detail={"field": kind.artifact})
    real = Path(path).resolve()
    return {"path": str(real), "sha256": sha256_file(real), "bytes": real.stat().st_size}


def run_kind_job(kind: JobKind | str, client: redis.Redis, job_id: str, attempt: int, *, heartbeat_s: float,
                 max_retries: int = 1) -> dict[str, Any]:
    """Task body (in the worker): claim, heartbeat, ``kind.run`` with progress/cancel/time limit, outcome."""
    kind = get_kind(kind) if isinstance(kind, str) else kind
    store = KindJobStore(kind, client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)

    def body(job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        result = json_safe(dict(kind.run(dict(job.spec["params"]), progress)))
        if kind.artifact:
            result["artifact"] = _describe_artifact(kind, result)
        return result

    return execute(store, job_id, attempt, body, heartbeat_s=heartbeat_s, label=kind.label)


def reap_all_kinds(client: redis.Redis, *, heartbeat_s: float, queued_grace_s: float | None = RESEND_GRACE_S,
                   app=None) -> dict[str, dict[str, list[str]]]:
    """One reaper pass over every registered kind (a starting worker recovers what a dead one left)."""
    return {kind.name: reap_lost_jobs(KindJobStore(kind, client, heartbeat_ttl_s=3 * heartbeat_s),
                                      celery_sender(kind, app), queued_grace_s=queued_grace_s, broker=client)
            for kind in registered()}


def _celery_task(kind: JobKind) -> Any:
    from services.jobs.celery_app import celery_app

    def run_task(job_id: str, attempt: int) -> dict:
        from services.jobs.worker import worker_context

        ctx = worker_context()
        return run_kind_job(kind.name, ctx.redis, job_id, int(attempt), heartbeat_s=ctx.heartbeat_s)

    run_task.__name__ = run_task.__qualname__ = f"{kind.name}_job"
    run_task.__doc__ = f"Run one {kind.label} job attempt (state, progress and result live in its job store)."
    return celery_app.task(name=kind.task_name, acks_late=True)(run_task)
