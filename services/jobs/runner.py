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
from typing import Any, Callable

import numpy as np
import redis

from services.errors import Cancelled, InvalidInput, TimeLimitExceeded, Unavailable, VislexError
from services.jobs import methods
from services.jobs.spaces import load_space
from services.jobs.store import JobStore, Publication

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


FINGERPRINT_OPTIONS = methods.FINGERPRINT_OPTIONS  # job option holding WALIP step-1 knobs


def _lang(side: dict[str, Any]) -> str:
    return str(side.get("lang") or side["name"])


class _FingerprintSetup:
    """What ``seed=fingerprints`` needs, checked before any word space is loaded (fail fast, never fall back)."""

    def __init__(self, spec: dict[str, Any], settings: Any, clip_pool: Any = None):
        from services.vision import config as vc
        from services.vision.walip_pipeline import FingerprintOptions

        self.src_lang, self.tgt_lang = _lang(spec["src"]), _lang(spec["tgt"])
        self.images_dir = vc.check_images_dir(getattr(settings, "images_dir", None))
        opts = dict((spec.get("options") or {}).get(FINGERPRINT_OPTIONS) or {})
        if opts.get("templates") is None:
            opts["templates"] = vc.effective_templates(getattr(settings, "clip_templates", None))
        self.options = FingerprintOptions.from_dict(opts)
        pool = clip_pool if clip_pool is not None else vc.pool_from_settings(settings, [self.src_lang, self.tgt_lang])
        self.src_enc = vc.language_encoders(pool, self.src_lang)
        self.tgt_enc = vc.language_encoders(pool, self.tgt_lang)
        data_dir = getattr(settings, "data_dir", None)
        self.cache_dir = str(Path(data_dir) / "cache") if data_dir else None

    def pivots(self, src, tgt, progress) -> tuple[np.ndarray, dict[str, Any]]:
        """WALIP step 1 (methods.md): fingerprint pivot pairs, as seed pairs for step 2."""
        from services.errors import NotFound
        from services.vision.config import IMAGES_UNAVAILABLE
        from services.vision.walip_pipeline import compute_pivots

        try:
            report = compute_pivots(src.words, tgt.words, src_enc=self.src_enc, tgt_enc=self.tgt_enc,
                                    images_dir=self.images_dir, src_lang=self.src_lang, tgt_lang=self.tgt_lang,
                                    options=self.options, cache_dir=self.cache_dir, progress=progress)
        except NotFound as exc:  # the folder vanished between the check and the embedding
            raise Unavailable(f"image set unavailable: {exc.message}", code=IMAGES_UNAVAILABLE, detail=exc.detail) from None
        pairs = report.pivots.pairs
        summary = report.summary()
        if len(pairs) == 0:
            raise InvalidInput("seed 'fingerprints': the fingerprint step found no pivot pairs "
                               "(lower options.fingerprints.q or check the image set)",
                               code="no_seed_pairs", detail={"field": "seed", "fingerprints": summary})
        info = {"seed": "fingerprints", "seed_pairs": len(pairs), "pivot_pairs": len(pairs),
                "fingerprints": {**summary, "src_encoder": self.src_enc.source, "tgt_encoder": self.tgt_enc.source}}
        return pairs, info


def _seed_pairs(spec: dict[str, Any], src, tgt, fingerprints: _FingerprintSetup | None = None,
                progress=None) -> tuple[np.ndarray, dict[str, Any]]:
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
    if seed == "fingerprints":
        if fingerprints is None:
            raise InvalidInput("seed 'fingerprints' needs the CLIP fingerprint setup", detail={"field": "seed"})
        return fingerprints.pivots(src, tgt, progress)
    # never hand None to align: the registry would silently seed from identical strings
    raise InvalidInput(f"unknown seed {seed!r}", detail={"field": "seed", "known": ["identical", "dictionary", "fingerprints"]})


def _initial_matching(spec: dict[str, Any], pairs: np.ndarray, src, tgt) -> dict[str, Any] | None:
    """Precision of the pivot pairs against ``evaluate_with`` (WALIP's initial matching accuracy)."""
    test = spec.get("evaluate_with")
    if not test:
        return None
    from services.alignment import dictionary as D
    from services.vision.fingerprints import pivot_precision

    gold, _ = D.dictionary_to_indices([tuple(p) for p in test], src.index, tgt.index)
    metrics = pivot_precision(pairs, gold)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}


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


def _record_seed(mapping, seed_info: dict[str, Any]) -> None:
    """The mapping records the seed actually used (the registry only knows "given" pairs)."""
    stats = getattr(mapping, "stats", None)
    if isinstance(stats, dict):
        stats.update({k: v for k, v in seed_info.items() if k != "seed_oov_pairs"})
    params = getattr(mapping, "params", None)
    if isinstance(params, dict) and seed_info.get("seed") == "fingerprints":
        params["seed"] = seed_info["seed"]
        params["seed_pairs"] = seed_info.get("seed_pairs")
        if hasattr(mapping, "content_hash"):
            mapping.version = mapping.content_hash()


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


def mapping_publication(src: str, tgt: str, info: dict[str, Any]) -> Publication:
    """What makes a mapping the served one for ``src-tgt`` on every replica: key, pair index, pub/sub message."""
    return Publication(key=mapping_key(src, tgt), index_key=MAPPING_PAIRS_KEY, pair=f"{src}-{tgt}",
                       channel=MAPPINGS_CHANNEL, payload=json.dumps(info, sort_keys=True),
                       message=json.dumps({"pair": f"{src}-{tgt}", **info}, sort_keys=True))


def publish_mapping(client: redis.Redis, src: str, tgt: str, info: dict[str, Any]) -> None:
    """Make the new mapping the served one for ``src-tgt`` on every replica (key + pub/sub message)."""
    pub = mapping_publication(src, tgt, info)
    pipe = client.pipeline()
    pipe.set(pub.key, pub.payload)
    pipe.sadd(pub.index_key, pub.pair)
    pipe.publish(pub.channel, pub.message)
    pipe.execute()


def run_alignment_job(client: redis.Redis, job_id: str, attempt: int, *, artifacts_dir: Path,
                      heartbeat_s: float, max_retries: int = 1, settings: Any = None,
                      settings_loader: Callable[[], Any] | None = None,
                      clip_pool: Any = None) -> dict[str, Any]:
    """Task body: returns a small summary for Celery's result backend (the job state lives in the store).

    ``settings`` (or, when absent, ``settings_loader()``, called per job so a job sees the configuration
    of its time; read only for ``seed=fingerprints``)
    supply the image folder, the CLIP per language and the prompt templates; ``clip_pool``
    replaces the pool built from them (tests, embedding callers).
    """
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
        fingerprints = None
        if spec["seed"] == "fingerprints":
            reporter("clip", 0, 1, {})
            if settings is None:
                if settings_loader is None:
                    raise Unavailable("no settings for a fingerprint seed (images, CLIP): start workers with "
                                      "`vislex worker`", code="settings_unavailable")
                settings = settings_loader()
            fingerprints = _FingerprintSetup(spec, settings, clip_pool)  # fails fast: no CLIP, no images
            reporter("clip", 1, 1, {})
        reporter("loading", 0, 2, {})
        src = load_space(spec["src"], max_vocab=spec.get("max_vocab"), normalize=spec.get("normalize", ""))
        reporter("loading", 1, 2, {})
        tgt = load_space(spec["tgt"], max_vocab=spec.get("max_vocab"), normalize=spec.get("normalize", ""))
        reporter("loading", 2, 2, {})
        seed_pairs, seed_info = _seed_pairs(spec, src, tgt, fingerprints, reporter)
        initial = _initial_matching(spec, seed_pairs, src, tgt) if fingerprints is not None else None
        if initial is not None:
            seed_info["fingerprints"]["initial_matching"] = initial
            seed_info["initial_matching_precision"] = initial["precision"]
        align_options = {k: v for k, v in (spec.get("options") or {}).items() if k != FINGERPRINT_OPTIONS}
        result = methods.align(src, tgt, spec["method"], seed_pairs=seed_pairs, options=align_options,
                               progress=reporter)
        _record_seed(result.mapping, seed_info)
        reporter("evaluating", 0, 1, {})
        evaluation = _evaluate(spec, result.mapping, src, tgt)
        if evaluation is not None and initial is not None:
            evaluation = {**evaluation, "initial_matching_precision": initial["precision"],
                          "pivot_pairs": seed_info["pivot_pairs"]}
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
        # 'succeeded' and the publication of the new version are one atomic step (see JobStore.finish).
        store.finish(job_id, attempt, "succeeded", result=summary, progress=done,
                     publish=mapping_publication(spec["src"]["name"], spec["tgt"]["name"], {
                         "version": artifacts["mapping"]["version"] or artifacts["mapping"]["sha256"][:16],
                         "path": artifacts["mapping"]["path"], "sha256": artifacts["mapping"]["sha256"],
                         "job_id": job_id, "method": spec["method"], "published_at": time.time(),
                     }))
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
