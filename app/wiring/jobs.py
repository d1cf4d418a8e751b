"""Startup wiring for background jobs: point Celery at the runtime's Redis and build the job service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from celery import Celery

from app.runtime import Runtime
from services.alignment.untrusted import ParseLimits
from services.jobs.celery_app import celery_app, configure
from services.jobs.service import JobService

log = logging.getLogger(__name__)


def _install_published_mappings(runtime: Runtime):
    """Callback for new mapping versions: the serving registry installs what Redis publishes."""

    def on_mapping(src: str, tgt: str, info: dict[str, Any]) -> bool:
        push = runtime.extras.get("version_push")
        if push is not None:  # the serving layer's own subscriber installs it (services/serving/version_push.py)
            push.expect(src, tgt, str(info.get("version")), str(info.get("path")))
            return True
        registry = runtime.spaces
        if registry is None or runtime.components.get("spaces") is None \
                or runtime.components["spaces"].state != "ready":
            return False  # not loaded yet: retried on the next sync (serving also syncs when it loads)
        if hasattr(registry, "sync_from_redis"):
            registry.sync_from_redis(runtime.redis)
            return True
        from services.alignment.mapping import Mapping

        registry.install_mapping(src, tgt, Mapping.load(info["path"]))
        return True

    return on_mapping


def _serve_new_space(runtime: Runtime):
    """Callback for a registered space: make the translate endpoints serve it too."""
    settings = runtime.settings

    def on_space(info: dict[str, Any]) -> bool:
        registry = runtime.spaces
        state = runtime.components.get("spaces")
        if registry is None or not hasattr(registry, "add_space") or state is None or state.state != "ready":
            return False  # retried by the jobs monitor once serving has loaded
        current = registry.spaces.get(info["name"])
        if current is not None and current.fingerprint and current.fingerprint == info.get("fingerprint"):
            return True  # already served (e.g. this replica registered it)
        from services.alignment.vectors import load_normalized
        from services.serving.space import WordSpace

        wv, fingerprint = load_normalized(info["path"], settings.normalize, max_vocab=settings.max_vocab,
                                          fmt=info.get("fmt"))
        X = wv.vectors
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norms > 0, norms, 1.0)
        registry.add_space(WordSpace.build(info["name"], wv.words, X, source=f"registered:{info['path']}",
                                           fingerprint=fingerprint, storage_dtype=settings.storage_dtype))
        if hasattr(registry, "sync_from_redis"):  # mappings published for this name before it was served
            registry.sync_from_redis(runtime.redis)
        return True

    return on_space


def _served_space(runtime: Runtime):
    """Spaces the serving layer holds but jobs have no file for: encoder-derived vocabularies.

    Workers rebuild them with the serving layer's builder (``build_encoder_vectors``, disk-cached under
    ``Settings.cache_dir``), so the job aligns exactly the vectors the API serves (fingerprint checked).
    """
    settings = runtime.settings

    def fallback(name: str) -> dict[str, Any] | None:
        registry = runtime.spaces
        space = getattr(registry, "spaces", {}).get(name) if registry is not None else None
        if space is None:
            return None
        info = {"name": name, "path": None, "source": space.source, "builder": "serving",
                "fingerprint": space.fingerprint or None, "words": len(space), "dim": space.dim}
        if str(space.source).startswith("encoder:"):
            from app.wiring.serving import purity_rule

            rule = purity_rule(settings)
            info.update(builder="encoder", encoder_name=settings.text_encoder,
                        vocab_size=settings.encoder_vocab_size, cache_dir=str(settings.cache_dir.resolve()),
                        purity=None if rule is None else {"leak_margin": rule.leak_margin,
                                                          "reference_languages": list(rule.reference_languages),
                                                          "scripts": rule.scripts})
        return info

    return fallback


def _mapping_state(runtime: Runtime):
    """A succeeded job's mapping on this replica (job view): installed, installing, superseded, ..."""

    def state(src: str, tgt: str, version: str, path: str | None) -> str:
        push = runtime.extras.get("version_push")
        if push is None or runtime.spaces is None:
            return "not_served"  # the serving layer is not loaded (yet) in this process
        return push.state(src, tgt, version, path)

    return state


def _served_spaces(runtime: Runtime):
    def names() -> list[str]:
        registry = runtime.spaces
        return sorted(getattr(registry, "spaces", {}) or {}) if registry is not None else []

    return names


def allowed_space_roots(settings) -> list[Path]:
    """Directories POST /v1/spaces may read server-side files from."""
    roots = [settings.data_dir, *(Path(p).expanduser().parent for p in settings.spaces.values()),
             *settings.space_path_roots]
    return [Path(r).expanduser().resolve() for r in roots]


def job_input_roots(settings) -> list[Path]:
    """Where training jobs (uCLIP, CLIP) may read inputs from: the roots of POST /v1/spaces plus the image set."""
    return [*allowed_space_roots(settings), *([Path(settings.images_dir)] if settings.images_dir else [])]


def load(runtime: Runtime) -> None:
    """Configure the Celery client (the API only sends tasks; workers run them) and the job service."""
    settings = runtime.settings
    configure(runtime.redis_url, time_limit_s=settings.job_time_limit_s)
    runtime.extras["celery"] = celery_app
    # Jobs are sent through a Celery app of this runtime's own, bound to its Redis: the shared module-level
    # app keeps the broker pool of whichever URL used it first (several apps in one process, as in tests).
    sender = configure(runtime.redis_url, time_limit_s=settings.job_time_limit_s, app=Celery("vislex-api"))
    jobs = JobService(
        runtime.redis, artifacts_dir=settings.artifacts_dir, uploads_dir=settings.data_dir / "spaces",
        normalize=settings.normalize, max_vocab=settings.max_vocab, time_limit_s=settings.job_time_limit_s,
        heartbeat_s=settings.job_heartbeat_s, max_upload_bytes=settings.max_upload_bytes,
        configured_spaces=settings.spaces, on_mapping=_install_published_mappings(runtime),
        on_space=_serve_new_space(runtime), space_fallback=_served_space(runtime), celery=sender,
        space_roots=allowed_space_roots(settings), seed_check=_fingerprint_seed_check(settings),
        mapping_state=_mapping_state(runtime), served_spaces=_served_spaces(runtime),
        upload_limits=ParseLimits(max_decompressed_bytes=settings.max_decompressed_bytes,
                                  memory_bytes=settings.upload_parse_memory_bytes,
                                  timeout_s=settings.upload_parse_timeout_s),
    )
    jobs.start_monitor()
    runtime.jobs = jobs
    # The other kinds of jobs on the same machinery (services/jobs/kinds.py): CLIP training needs only Redis
    # here (workers load the towers). uCLIP trainings are wired with retrieval (app/wiring/retrieval.py).
    from app.wiring import clip

    clip.load(runtime)


def _fingerprint_seed_check(settings):
    """503 at submit for ``seed=fingerprints`` when the settings leave no image set or no CLIP weights."""
    from services.jobs.runner import _lang
    from services.vision.config import check_fingerprint_settings

    def check(seed: str, src: dict, tgt: dict) -> None:
        if seed == "fingerprints":
            check_fingerprint_settings(settings, _lang(src), _lang(tgt))

    return check
