"""The alignment job body, run inside a Celery worker process.

:func:`services.jobs.execution.execute` (the machinery every kind of job shares) claims the job for its
attempt, keeps its heartbeat and hands a progress callback that records progress/losses and stops the run
at the next iteration boundary on cancel or time limit; the body here runs
``services.alignment.registry.align``, writes the artifacts atomically, and its success publishes the new
mapping version for its pair in the same atomic step.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import redis

from services.errors import InvalidInput, Unavailable
from services.jobs import methods
from services.jobs.execution import (  # noqa: F401  (ProgressReporter, Superseded: public here too)
    ProgressReporter,
    Success,
    Superseded,
    execute,
    jsonable,
    sha256_file,
)
from services.jobs.spaces import load_space
from services.jobs.store import JobStore, Publication

log = logging.getLogger(__name__)

MAPPINGS_CHANNEL = "vislex:mappings"
MAPPING_PAIRS_KEY = "vislex:mapping-pairs"


def mapping_key(src: str, tgt: str) -> str:
    return f"vislex:mappings:{src}-{tgt}"


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
    replaces the pool built from them (tests, embedding callers). Claim, heartbeat, progress, cancel, time
    limit and the outcome are :func:`services.jobs.execution.execute`'s, as for every kind of job.
    """
    store = JobStore(client, heartbeat_ttl_s=3 * heartbeat_s, max_retries=max_retries)

    def body(job, reporter: ProgressReporter) -> Success:
        return _align(job.id, job.spec, reporter, artifacts_dir=Path(artifacts_dir), settings=settings,
                      settings_loader=settings_loader, clip_pool=clip_pool)

    return execute(store, job_id, attempt, body, heartbeat_s=heartbeat_s, label="alignment")


def _align(job_id: str, spec: dict[str, Any], reporter: ProgressReporter, *, artifacts_dir: Path, settings: Any,
           settings_loader: Callable[[], Any] | None, clip_pool: Any) -> Success:
    """Load the spaces, seed, align, evaluate, write the artifacts; success publishes the mapping atomically."""
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
    artifacts = _write_artifacts(artifacts_dir / "alignments" / job_id, result.mapping,
                                 getattr(result, "dictionary", None), src, tgt)
    summary = {
        **artifacts, **seed_info,
        "evaluation": evaluation,
        "validation_losses": [float(x) for x in (getattr(result, "validation_losses", None) or [])],
        "pairs_used": int(getattr(result, "pairs_used", 0) or 0),
        "align_seconds": float(getattr(result, "seconds", 0.0) or 0.0),
        "stats": jsonable(getattr(result.mapping, "stats", {}) or {}),
    }
    # 'succeeded' and the publication of the new version are one atomic step (see JobStore.finish).
    return Success(summary, publish=mapping_publication(spec["src"]["name"], spec["tgt"]["name"], {
        "version": artifacts["mapping"]["version"] or artifacts["mapping"]["sha256"][:16],
        "path": artifacts["mapping"]["path"], "sha256": artifacts["mapping"]["sha256"],
        "job_id": job_id, "method": spec["method"], "published_at": time.time(),
    }))
