"""The alignment job body, run inside a Celery worker process.

Claims the job for its attempt, keeps a heartbeat key alive from a thread (an expired
heartbeat means the worker died), runs ``services.alignment.registry.align`` with a
progress callback that records progress/losses and stops the run at the next iteration
boundary on cancel or time limit, then writes the artifacts atomically and publishes the
new mapping version for its pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from services.errors import Cancelled, InvalidInput, TimeLimitExceeded, VislexError
from services.jobs import methods
from services.jobs.spaces import load_space
from services.jobs.store import JobStore

log = logging.getLogger(__name__)

MAPPINGS_CHANNEL = "vislex:mappings"
MAPPING_PAIRS_KEY = "vislex:mapping-pairs"


def mapping_key(src: str, tgt: str) -> str:
    return f"vislex:mappings:{src}-{tgt}"


class Superseded(Exception):
    """This attempt lost the job to another one (the reaper re-queued it); stop quietly."""


class _Heartbeat(threading.Thread):
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _loss_of(metrics: dict[str, Any]) -> float | None:
    for key in ("validation_loss", "val_loss", "loss"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
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


class ProgressReporter:
    """The ``ProgressFn`` given to ``align``: records progress, raises Cancelled / TimeLimitExceeded."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, started_at: float, time_limit_s: float):
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.started_at, self.time_limit_s = started_at, time_limit_s
        self.stage: str | None = None
        self.stage_started_at = time.time()
        self.last: dict[str, Any] = {}

    def __call__(self, stage: str, current: int, total: int, metrics: dict | None = None) -> None:
        now = time.time()
        if stage != self.stage:
            self.stage, self.stage_started_at = stage, now
        metrics = _jsonable(metrics or {})
        self.last = {"stage": stage, "current": int(current), "total": int(total), "metrics": metrics,
                     "stage_started_at": self.stage_started_at, "at": now}
        cancel, current_attempt = self.store.report_progress(self.job_id, self.attempt, self.last, _loss_of(metrics))
        if not current_attempt:
            raise Superseded(self.job_id)
        if cancel:
            raise Cancelled(f"alignment job {self.job_id} cancelled", detail={"job_id": self.job_id})
        if now - self.started_at > self.time_limit_s:
            raise TimeLimitExceeded(f"time limit exceeded ({self.time_limit_s:g} s)",
                                    detail={"job_id": self.job_id, "time_limit_s": self.time_limit_s})


def _seed_pairs(spec: dict[str, Any], src, tgt) -> tuple[np.ndarray | None, dict[str, Any]]:
    from services.alignment import dictionary as D

    seed = spec["seed"]
    if seed == "identical":
        pairs = D.identical_pairs(src.words, tgt.words)
        if len(pairs) == 0:
            raise InvalidInput("the two vocabularies share no identical word: seed 'identical' gives no pairs; "
                               "use seed 'dictionary' or 'fingerprints'", detail={"field": "seed"})
        return pairs, {"seed": seed, "seed_pairs": int(len(pairs))}
    if seed == "dictionary":
        pairs, n_oov = D.dictionary_to_indices([tuple(p) for p in spec["dictionary"]], src.index, tgt.index)
        if len(pairs) == 0:
            raise InvalidInput("none of the dictionary pairs is in both vocabularies",
                               detail={"field": "dictionary", "oov_pairs": n_oov})
        return pairs, {"seed": seed, "seed_pairs": int(len(pairs)), "seed_oov_pairs": int(n_oov)}
    return None, {"seed": seed}  # "fingerprints": the method derives its own pivots (methods.md, WALIP step 1-2)


def _evaluate(spec: dict[str, Any], mapping, src, tgt) -> dict[str, Any] | None:
    pairs = spec.get("evaluate_with")
    if not pairs:
        return None
    from services.alignment import dictionary as D
    from services.alignment.evaluation import bli_evaluate

    test, _ = D.dictionary_to_indices([tuple(p) for p in pairs], src.index, tgt.index)
    _, uncovered = D.count_uncovered_sources([tuple(p) for p in pairs], src.index, tgt.index)
    if len(test) == 0:
        return {"n_queries": 0, "coverage": 0.0, "note": "no test pair is in both vocabularies"}
    scores = bli_evaluate(mapping.transform_source(src.vectors), mapping.transform_target(tgt.vectors), test,
                          n_oov_sources=uncovered)
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in scores.items()}


def _write_artifacts(job_dir: Path, mapping, dictionary, src, tgt) -> dict[str, Any]:
    job_dir.mkdir(parents=True, exist_ok=True)
    mapping_path = job_dir / "mapping.npz"
    # Mapping.save writes a temp file and os.replace()s it: a crash never leaves half a mapping.
    mapping.save(mapping_path)
    pairs, scores = (dictionary if dictionary is not None else (np.zeros((0, 2), np.int64), np.zeros(0)))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    lines = [f"{src.words[i]}\t{tgt.words[j]}\t{s:.6f}\n" for (i, j), s in zip(pairs.tolist(), scores.tolist())]
    dict_path = job_dir / "dictionary.tsv"
    _atomic_write_text(dict_path, "".join(lines))
    return {
        "mapping": {"path": str(mapping_path.resolve()), "sha256": sha256_file(mapping_path),
                    "version": getattr(mapping, "version", None), "bytes": mapping_path.stat().st_size},
        "dictionary": {"path": str(dict_path.resolve()), "pairs": int(len(pairs))},
    }


def publish_mapping(client: redis.Redis, src: str, tgt: str, info: dict[str, Any]) -> None:
    """Make the new mapping the served one for ``src-tgt`` on every replica (key + pub/sub message)."""
    payload = json.dumps(info, sort_keys=True)
    pipe = client.pipeline()
    pipe.set(mapping_key(src, tgt), payload)
    pipe.sadd(MAPPING_PAIRS_KEY, f"{src}-{tgt}")
    pipe.publish(MAPPINGS_CHANNEL, json.dumps({"pair": f"{src}-{tgt}", **info}, sort_keys=True))
    pipe.execute()


def run_alignment_job(client: redis.Redis, job_id: str, attempt: int, *, artifacts_dir: Path,
                      heartbeat_s: float, max_retries: int = 1) -> dict[str, Any]:
    """Task body: returns a small summary for Celery's result backend (the job state lives in the store)."""
    store = JobStore(client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    outcome = store.claim(job_id, attempt, worker)
    if outcome not in ("claimed", "reclaimed"):
        log.info("job not claimed", extra={"job_id": job_id, "attempt": attempt, "outcome": outcome})
        return {"job_id": job_id, "skipped": outcome}
    job = store.get(job_id)
    spec = job.spec
    heartbeat = _Heartbeat(store, job_id, worker, heartbeat_s)
    heartbeat.start()
    reporter = ProgressReporter(store, job_id, attempt, job.started_at or time.time(), float(spec["time_limit_s"]))
    try:
        from celery.exceptions import SoftTimeLimitExceeded
    except ImportError:  # pragma: no cover - celery is a dependency
        SoftTimeLimitExceeded = TimeLimitExceeded  # type: ignore[misc]
    try:
        reporter("loading", 0, 2, {})
        src = load_space(spec["src"], max_vocab=spec.get("max_vocab"), normalize=spec.get("normalize", ""))
        reporter("loading", 1, 2, {})
        tgt = load_space(spec["tgt"], max_vocab=spec.get("max_vocab"), normalize=spec.get("normalize", ""))
        reporter("loading", 2, 2, {})
        seed_pairs, seed_info = _seed_pairs(spec, src, tgt)
        result = methods.align(src, tgt, spec["method"], seed_pairs=seed_pairs, options=spec.get("options") or {},
                       progress=reporter)
        reporter("evaluating", 0, 1, {})
        evaluation = _evaluate(spec, result.mapping, src, tgt)
        reporter("saving", 0, 1, {})
        artifacts = _write_artifacts(Path(artifacts_dir) / "alignments" / job_id, result.mapping,
                                     getattr(result, "dictionary", None), src, tgt)
        summary = {
            **artifacts, **seed_info,
            "evaluation": evaluation,
            "validation_losses": [float(x) for x in (getattr(result, "validation_losses", None) or [])],
            "pairs_used": int(getattr(result, "pairs_used", 0) or 0),
            "align_seconds": float(getattr(result, "seconds", 0.0) or 0.0),
            "stats": _jsonable(getattr(result.mapping, "stats", {}) or {}),
        }
        done = {**reporter.last, "stage": "done", "current": 1, "total": 1, "at": time.time()}
        if store.finish(job_id, attempt, "succeeded", result=summary, progress=done):
            publish_mapping(client, spec["src"]["name"], spec["tgt"]["name"], {
                "version": artifacts["mapping"]["version"] or artifacts["mapping"]["sha256"][:16],
                "path": artifacts["mapping"]["path"], "sha256": artifacts["mapping"]["sha256"],
                "job_id": job_id, "method": spec["method"], "published_at": time.time(),
            })
        return {"job_id": job_id, "state": "succeeded"}
    except Superseded:
        log.warning("job attempt superseded", extra={"job_id": job_id, "attempt": attempt})
        return {"job_id": job_id, "skipped": "superseded"}
    except Cancelled as exc:
        store.finish(job_id, attempt, "cancelled", error={"code": "cancelled", "message": str(exc)})
        return {"job_id": job_id, "state": "cancelled"}
    except (TimeLimitExceeded, SoftTimeLimitExceeded):
        limit = spec.get("time_limit_s")
        store.finish(job_id, attempt, "failed",
                     error={"code": "time_limit_exceeded", "message": f"time limit exceeded ({limit} s)"})
        return {"job_id": job_id, "state": "failed"}
    except VislexError as exc:
        store.finish(job_id, attempt, "failed", error={"code": exc.code, "message": exc.message,
                                                        "detail": _jsonable(exc.detail)})
        return {"job_id": job_id, "state": "failed"}
    except Exception as exc:  # any bug becomes a failed job with its reason, never a job stuck 'running'
        log.exception("alignment job crashed", extra={"job_id": job_id})
        store.finish(job_id, attempt, "failed", error={"code": "internal_error",
                                                        "message": f"{type(exc).__name__}: {exc}"})
        return {"job_id": job_id, "state": "failed"}
    finally:
        heartbeat.halt.set()
