"""Alignment jobs, API side: content-addressed submission, status views, cancel, results, and a monitor thread.

The monitor thread (one per API process) reaps jobs whose worker died (heartbeat expired:
re-queued once, then failed "worker lost"), re-sends queued jobs whose task message never
reached the broker or is no longer in it (after a grace period; the per-attempt claim makes a
duplicate message harmless), and applies newly published mapping versions
to the local serving layer (pub/sub message, plus a cheap periodic version check in case a
message was missed). All job state lives in Redis, so restarting the API loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import redis

from services.errors import Conflict, InvalidInput, NotFound
from services.jobs import methods
from services.jobs.recovery import (  # noqa: F401  (re-exported: the alignment API's names)
    MAX_SEND_FAILURES,
    RESEND_GRACE_S,
    SendTask,
    broker_messages,
    reap_lost_jobs,
    send_job,
)
from services.jobs.runner import MAPPING_PAIRS_KEY, MAPPINGS_CHANNEL, mapping_key
from services.jobs.spaces import SPACES_CHANNEL, SpaceCatalog
from services.jobs.store import FINAL_STATES, STATES, JobRecord, JobStore

log = logging.getLogger(__name__)

SEEDS = ("identical", "dictionary", "fingerprints")
ALIGN_TASK = "vislex.align"
# Options that steer the job, not the result: excluded from the content address.
_JOB_OPTIONS = ("time_limit_s", "queue")
# Spaces bigger than this (words) go to the "heavy" queue.
_HEAVY_WORDS = 20000
MappingCallback = Callable[[str, str, dict[str, Any]], bool]


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_id_for(key: dict[str, Any]) -> str:
    """Content address: the same inputs always give the same job id."""
    return hashlib.sha256(_canonical_json(key).encode()).hexdigest()[:24]


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf (e.g. a diverged loss) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _pairs(value: Any, field: str) -> list[list[str]]:
    out = []
    for i, pair in enumerate(value or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(w, str) and w for w in pair)):
            raise InvalidInput(f"{field}[{i}] must be a [source, target] pair of words", detail={"field": f"{field}.{i}"})
        out.append([pair[0], pair[1]])
    return out


def celery_sender(app=None) -> SendTask:
    """Send the align task through Celery with the job's own soft/hard time limits."""

    def send(job_id: str, attempt: int, spec: dict[str, Any]) -> None:
        from services.jobs.celery_app import celery_app

        limit = float(spec["time_limit_s"])
        (app or celery_app).send_task(
            ALIGN_TASK, args=[job_id, attempt], queue=spec.get("queue", "light"), task_id=f"{job_id}-{attempt}",
            # The progress callback enforces the limit at iteration boundaries; Celery's soft limit
            # (a signal) catches a run stuck inside one long step, its hard limit a run ignoring that.
            soft_time_limit=limit * 1.05 + 1, time_limit=limit * 1.1 + 30,
        )

    return send


# Fixed phrases of vector-file errors that carry no file content (the rest is replaced by a generic reason).
_SAFE_REASONS = ("no such file", "missing vocabulary file", "cannot tell the vector format", "unknown vector format",
                 "no word vectors in file", "expected a 2-d float array", "not a readable .npy array",
                 "not a fastText .bin model", "cannot read")


def _vector_file_problem(exc: Exception) -> str:
    """The reason a server-side file was rejected, as counts per kind of problem: no word or line of it."""
    counts = (getattr(exc, "detail", None) or {}).get("counts") or {}
    if counts:
        reason = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    else:
        reason = next((r for r in _SAFE_REASONS if r in str(exc)), "unreadable or malformed")
    return f"path: not a valid word-vectors file ({reason})"


class JobService:
    """Everything the alignment routes need; one per API process."""

    def __init__(self, client: redis.Redis, *, artifacts_dir: Path, uploads_dir: Path, normalize: str,
                 max_vocab: int | None, time_limit_s: float, heartbeat_s: float, max_upload_bytes: int,
                 configured_spaces: dict[str, str] | None = None, send_task: SendTask | None = None,
                 on_mapping: MappingCallback | None = None, on_space: Callable[[dict[str, Any]], None] | None = None,
                 space_fallback: Callable[[str], dict[str, Any] | None] | None = None, max_retries: int = 1,
                 celery=None, space_roots: list[str | Path] | None = None, resend_grace_s: float = RESEND_GRACE_S,
                 max_send_failures: int = MAX_SEND_FAILURES,
                 mapping_state: Callable[[str, str, str, str], str] | None = None,
                 served_spaces: Callable[[], list[str]] | None = None,
                 seed_check: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None,
                 upload_limits=None):
        self.redis = client
        # (src, tgt, version, path) -> 'installed' | 'installing' | ...: a succeeded job's mapping on this replica.
        self.mapping_state = mapping_state
        # Names of the spaces this replica serves (encoder-derived ones have no catalog entry): listed in 404s.
        self.served_spaces = served_spaces
        # (seed, src, tgt) -> None or raises: refuses at submit what no worker could run (e.g. no CLIP).
        self.seed_check = seed_check
        self.artifacts_dir = Path(artifacts_dir)
        self.normalize = normalize
        self.max_vocab = max_vocab
        self.time_limit_s = float(time_limit_s)
        self.heartbeat_s = float(heartbeat_s)
        self.store = JobStore(client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)
        self.spaces = SpaceCatalog(client, uploads_dir=uploads_dir, max_vocab=max_vocab,
                                   max_upload_bytes=max_upload_bytes, fallback=space_fallback,
                                   parse_limits=upload_limits)
        self.spaces.sync_settings(configured_spaces or {})
        self.celery = celery  # a Celery app bound to this service's Redis (closed with the service)
        self.send_task = send_task or celery_sender(celery)
        self.on_mapping = on_mapping
        self.on_space = on_space
        # Server-side paths POST /v1/spaces may register from (None: any path, for library/CLI use).
        self.space_roots = [Path(r) for r in space_roots] if space_roots is not None else None
        self.resend_grace_s = float(resend_grace_s)
        self.max_send_failures = int(max_send_failures)
        self.applied_versions: dict[str, str] = {}
        self.applied_spaces: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- submission ------------------------------------------------------------------
    def submit(self, request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(job view, created) -- created False means an identical job exists (running or done): 'cached'."""
        src_info = self._resolve(request["src"], "src")
        tgt_info = self._resolve(request["tgt"], "tgt")
        method = methods.canonical(request["method"])
        seed = request.get("seed") or "identical"
        if seed not in SEEDS:
            raise InvalidInput(f"seed must be one of {list(SEEDS)}", detail={"field": "seed", "known": list(SEEDS)})
        if self.seed_check is not None:
            self.seed_check(seed, src_info, tgt_info)
        dictionary = _pairs(request.get("dictionary"), "dictionary")
        if seed == "dictionary" and not dictionary:
            raise InvalidInput("seed 'dictionary' needs a non-empty 'dictionary' of [source, target] pairs",
                               detail={"field": "dictionary"})
        evaluate_with = _pairs(request.get("evaluate_with"), "evaluate_with")
        options = dict(request.get("options") or {})
        time_limit = options.get("time_limit_s", self.time_limit_s)
        if not isinstance(time_limit, (int, float)) or isinstance(time_limit, bool) or time_limit <= 0:
            raise InvalidInput("options.time_limit_s must be a positive number", detail={"field": "options.time_limit_s"})
        if time_limit > self.time_limit_s:  # the broker's visibility timeout is sized for the configured maximum
            raise InvalidInput(f"options.time_limit_s must be at most {self.time_limit_s:g} (the server's job time "
                               "limit, VISLEX_JOB_TIME_LIMIT_S)",
                               detail={"field": "options.time_limit_s", "max": self.time_limit_s})
        queue = options.get("queue") or (
            "heavy" if max(src_info.get("words") or 0, tgt_info.get("words") or 0) > _HEAVY_WORDS else "light")
        if queue not in ("light", "heavy"):
            raise InvalidInput("options.queue must be 'light' or 'heavy'", detail={"field": "options.queue"})
        align_options = {k: v for k, v in options.items() if k not in _JOB_OPTIONS}
        methods.validate_options(method, align_options)
        key = {
            "v": 1, "src": src_info.get("fingerprint"), "tgt": tgt_info.get("fingerprint"), "method": method,
            "options": align_options, "seed": seed,
            "dictionary": hashlib.sha256(_canonical_json(dictionary).encode()).hexdigest() if dictionary else None,
            "evaluate_with": hashlib.sha256(_canonical_json(evaluate_with).encode()).hexdigest() if evaluate_with else None,
            "normalize": self.normalize, "max_vocab": self.max_vocab,
            # the names matter too: the result is published as the mapping of this pair
            "pair": f"{request['src']}-{request['tgt']}",
        }
        job_id = job_id_for(key)
        spec = {
            "src": {**src_info, "name": request["src"]}, "tgt": {**tgt_info, "name": request["tgt"]},
            "method": method, "seed": seed, "dictionary": dictionary or None, "evaluate_with": evaluate_with or None,
            "options": align_options, "time_limit_s": float(time_limit), "queue": queue,
            "normalize": self.normalize, "max_vocab": self.max_vocab,
        }
        status, value = self.store.create(job_id, spec, pair=key["pair"], method=method)
        if status in ("created", "requeued"):
            # A failed send leaves the job queued and unsent: it is still accepted, and the monitor re-sends
            # it after the grace period (or fails it, naming why, after repeated failures).
            send_job(self.store, self.send_task, job_id, int(value), spec, max_failures=self.max_send_failures)
            return self.view(job_id), True
        return self.view(job_id), False

    def _resolve(self, name: str, field: str) -> dict[str, Any]:
        try:
            return self.spaces.resolve(name, field=field)
        except NotFound as exc:
            if "known" in exc.detail and self.served_spaces is not None:  # the catalog lists files only
                exc.detail["known"] = sorted(set(exc.detail["known"]) | set(self.served_spaces()))
            raise

    # ---- reads -----------------------------------------------------------------------
    def view(self, job_id: str, job: JobRecord | None = None) -> dict[str, Any]:
        job = job or self.store.get(job_id)
        spec = job.spec
        now = time.time()
        progress = None
        if job.progress:
            p = job.progress
            end = job.finished_at or now
            elapsed = (end - job.started_at) if job.started_at else None
            eta = None
            if job.state == "running" and p.get("current") and p.get("total") and p["total"] > p["current"]:
                spent = max(p.get("at", now) - p.get("stage_started_at", now), 0.0)
                eta = round(spent / p["current"] * (p["total"] - p["current"]), 3)
            progress = {"stage": p.get("stage"), "current": p.get("current"), "total": p.get("total"),
                        "metrics": p.get("metrics") or {},
                        "elapsed_s": round(elapsed, 3) if elapsed is not None else None, "eta_s": eta}
        elif job.started_at:
            progress = {"stage": "starting", "current": 0, "total": 0, "metrics": {},
                        "elapsed_s": round((job.finished_at or now) - job.started_at, 3), "eta_s": None}
        result = job.result
        losses = (result or {}).get("validation_losses") or job.losses
        out: dict[str, Any] = {
            "id": job.id, "state": job.state, "src": spec["src"]["name"], "tgt": spec["tgt"]["name"],
            "method": spec["method"], "seed": spec["seed"], "options": spec.get("options") or {},
            "time_limit_s": spec.get("time_limit_s"), "queue": spec.get("queue"),
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "attempt": job.attempt, "retries": job.retries, "worker": job.worker,
            "cancel_requested": job.cancel_requested, "progress": progress,
            "validation_losses": losses, "evaluation": (result or {}).get("evaluation"),
            "error": job.error if job.state in ("failed", "cancelled") else None,
            "result": None,
        }
        if job.state == "succeeded" and result:
            out["result"] = {
                "mapping_version": result["mapping"].get("version"), "mapping_sha256": result["mapping"]["sha256"],
                "mapping_bytes": result["mapping"].get("bytes"), "dictionary_pairs": result["dictionary"]["pairs"],
                "pairs_used": result.get("pairs_used"), "seed_pairs": result.get("seed_pairs"),
                "align_seconds": result.get("align_seconds"),
            }
            if self.mapping_state is not None:
                mapping = result["mapping"]
                version = mapping.get("version") or mapping["sha256"][:16]  # as published (runner)
                out["result"]["serving"] = self.mapping_state(out["src"], out["tgt"], version, mapping.get("path"))
        return _finite(out)

    def list(self, *, state: str | None = None, pair: str | None = None, offset: int = 0,
             limit: int = 50) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {list(STATES)}", detail={"field": "state", "known": list(STATES)})
        jobs, total = self.store.list(state=state, pair=pair, offset=offset, limit=limit)
        return {"jobs": [self.view(j.id, j) for j in jobs], "total": total, "offset": offset, "limit": limit}

    def cancel(self, job_id: str) -> dict[str, Any]:
        outcome = self.store.cancel(job_id)  # 'cancelled_now' (was queued), 'cancelling' (running), or final
        if outcome == "missing":
            raise NotFound(f"no alignment job {job_id!r}", detail={"job_id": job_id})
        if outcome in FINAL_STATES:
            raise Conflict(f"alignment job {job_id} is already {outcome}", detail={"job_id": job_id, "state": outcome})
        return self.view(job_id)

    def _succeeded(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job.state != "succeeded" or not job.result:
            raise Conflict(f"alignment job {job_id} has no result (state {job.state})",
                           detail={"job_id": job_id, "state": job.state})
        return job.result

    def dictionary(self, job_id: str) -> list[tuple[str, str, float]]:
        path = Path(self._succeeded(job_id)["dictionary"]["path"])
        if not path.is_file():
            raise NotFound(f"dictionary file of job {job_id} is gone", detail={"job_id": job_id})
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            s, t, score = line.split("\t")
            rows.append((s, t, float(score)))
        return rows

    def mapping_file(self, job_id: str) -> tuple[Path, str]:
        """(path, sha256) of the job's mapping; NotFound if the file vanished or no longer matches."""
        info = self._succeeded(job_id)["mapping"]
        path = Path(info["path"])
        if not path.is_file():
            raise NotFound(f"mapping file of job {job_id} is gone", detail={"job_id": job_id})
        return path, info["sha256"]

    # ---- spaces ------------------------------------------------------------------------
    def _check_replaceable(self, name: str) -> None:
        """Configured and encoder-derived spaces are not replaced over HTTP (409): only registered ones are."""
        current = self.spaces.get(name)
        served = self.spaces.fallback(name) if (current is None and self.spaces.fallback is not None) else None
        if (current is not None and current.get("source") == "settings") or served is not None:
            raise Conflict(f"space {name!r} is configured on the server and cannot be replaced; pick another name",
                           detail={"field": "name", "space": name})

    def _check_path_allowed(self, path: str) -> None:
        """Only files under the allowed roots may be registered (never e.g. /etc/...); checked on the real path."""
        from services.infra.paths import allowed_path

        allowed_path(path, self.space_roots, field="path")

    def register_space(self, name: str, path: str, fmt: str | None = None) -> dict[str, Any]:
        """Register a server-side file. Errors name the problem, never the file's content."""
        from services.alignment.vectors import VectorFileError

        self._check_path_allowed(path)
        self._check_replaceable(name)
        try:
            info = self.spaces.register(name, path, fmt=fmt)
        except VectorFileError as exc:
            raise InvalidInput(_vector_file_problem(exc), code=exc.code,
                               detail={"field": "path", "counts": dict(exc.detail.get("counts") or {})}) from None
        self._space_added(info)
        return info

    def upload_space(self, name: str, filename: str, stream, vocab=None, fmt: str | None = None) -> dict[str, Any]:
        self._check_replaceable(name)
        info = self.spaces.save_upload(name, filename, stream, vocab=vocab, fmt=fmt)
        self._space_added(info)
        return info

    def _space_added(self, info: dict[str, Any]) -> None:
        if self.on_space is not None:
            try:
                if self.on_space(info):
                    self.applied_spaces[info["name"]] = info.get("fingerprint")
            except Exception:  # serving may not be loaded; jobs can still use the space
                log.exception("serving layer did not accept the new space", extra={"space": info.get("name")})

    def sync_spaces(self) -> list[str]:
        """Serve here every space registered over HTTP (by any replica, before any restart) not yet served."""
        if self.on_space is None:
            return []
        added = []
        for info in self.spaces.all():
            if info.get("source") not in ("registered", "upload"):
                continue
            if self.applied_spaces.get(info["name"]) == info.get("fingerprint"):
                continue
            self._space_added(info)
            if info["name"] in self.applied_spaces:
                added.append(info["name"])
        return added

    # ---- background: reaper + mapping sync ----------------------------------------------
    def reap(self) -> dict[str, list[str]]:
        return reap_lost_jobs(self.store, self.send_task, queued_grace_s=self.resend_grace_s, broker=self.redis,
                              max_send_failures=self.max_send_failures)

    def sync_mappings(self) -> list[str]:
        """Apply every published mapping version not yet applied here; returns the pairs applied."""
        if self.on_mapping is None:
            return []
        pairs = sorted(p.decode() if isinstance(p, bytes) else p for p in self.redis.smembers(MAPPING_PAIRS_KEY))
        if not pairs:
            return []
        raw = self.redis.mget([mapping_key(*p.split("-", 1)) for p in pairs])
        applied = []
        for pair, value in zip(pairs, raw):
            if value is None:
                continue
            info = json.loads(value)
            if self.applied_versions.get(pair) == info.get("version"):
                continue
            src, tgt = pair.split("-", 1)
            try:
                ok = self.on_mapping(src, tgt, info)
            except Exception:
                log.exception("installing published mapping failed", extra={"pair": pair})
                ok = False
            if ok:
                self.applied_versions[pair] = info.get("version")
                applied.append(pair)
        return applied

    def start_monitor(self, *, sync_interval_s: float = 2.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._monitor, args=(sync_interval_s,), name="vislex-jobs-monitor",
                                        daemon=True)
        self._thread.start()

    def _monitor(self, sync_interval_s: float) -> None:
        pubsub = None
        next_reap = next_sync = 0.0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(MAPPINGS_CHANNEL, SPACES_CHANNEL)
                    next_sync = 0.0  # (re)subscribed: catch up on anything missed meanwhile
                message = pubsub.get_message(timeout=min(self.heartbeat_s, 0.5))
                now = time.monotonic()
                if message is not None or now >= next_sync:
                    self.sync_spaces()  # first: a new mapping may be for a newly registered space
                    self.sync_mappings()
                    next_sync = now + sync_interval_s
                if now >= next_reap:
                    self.reap()
                    next_reap = now + self.heartbeat_s
            except redis.RedisError:
                log.warning("jobs monitor lost Redis; retrying", exc_info=True)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
                pubsub = None
                self._stop.wait(1.0)
            except Exception:  # the monitor must survive anything a callback does
                log.exception("jobs monitor iteration failed")
                self._stop.wait(1.0)
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.celery is not None:
            self.celery.close()

    def describe(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for job_id in self.store.active_ids():
            st = self.redis.hget(self.store.key(job_id), "state")
            if st:
                counts[st.decode()] = counts.get(st.decode(), 0) + 1
        return {"active": counts, "spaces": self.spaces.names(), "methods": methods.available()}
