"""Startup wiring for uCLIP retrieval: frozen CLIP + multilingual text encoder + heads + galleries.

Sets ``runtime.retrieval`` (:class:`services.retrieval.service.RetrievalService`) and
``runtime.extras["uclip_jobs"]`` (training jobs; set first, so training can be queued even
when this process has no CLIP weights -- the worker loads its own).
"""

from __future__ import annotations

from typing import Any

from app.runtime import ComponentUnavailable, Runtime
from app.settings import Settings
from services.errors import Unavailable


def _load_clip(settings: Settings, runtime: Runtime) -> Any:
    """The English CLIP: the vision feature's, when it loaded one, else loaded here from settings."""
    from models.clip import ClipSpec, load_clip

    pool = getattr(runtime.vision, "pool", None)
    if pool is not None and hasattr(pool, "for_language"):
        try:
            return pool.for_language("en").image
        except Unavailable:
            pass
    spec = ClipSpec(model=settings.clip_model, pretrained=settings.clip_pretrained,
                    checkpoint=str(settings.clip_checkpoint) if settings.clip_checkpoint else None,
                    device=settings.clip_device)
    return load_clip(spec)


def _load_text_encoder(settings: Settings) -> Any:
    from models.text_encoders import load_text_encoder

    return load_text_encoder(settings.text_encoder)


def _uclip_sender():
    """How training jobs reach workers (tests replace this)."""
    from services.retrieval.jobs import celery_uclip_sender

    return celery_uclip_sender()


def load(runtime: Runtime) -> None:
    """Build the retrieval service; ComponentUnavailable (with the reason) when an encoder is missing."""
    from services.retrieval.jobs import UclipTrainingJobs

    settings = runtime.settings
    if runtime.redis is not None:
        jobs = UclipTrainingJobs(
            runtime.redis, time_limit_s=settings.job_time_limit_s, heartbeat_s=settings.job_heartbeat_s,
            send_task=_uclip_sender())
        runtime.extras["uclip_jobs"] = jobs
        # Its reaper thread (jobs whose worker died, lost task messages) must stop before Redis does.
        runtime.extras.setdefault("on_close", []).append(jobs.close)
        jobs.start_monitor()
    runtime.retrieval = build_service(runtime)


def build_service(runtime: Runtime) -> Any:
    """The retrieval service over the runtime's CLIP (also called when the CLIP bootstrap swaps one in)."""
    from services.retrieval.service import RetrievalService

    settings = runtime.settings
    try:
        clip = _load_clip(settings, runtime)
    except Unavailable as exc:
        vision = runtime.components.get("clip")
        # The vision component's reason says what fixes it (e.g. the CLIP bootstrap's); the retry here does not.
        why = vision.reason if vision is not None and vision.state != "ready" and vision.reason else exc.message
        raise ComponentUnavailable(f"CLIP encoder unavailable: {why}") from exc
    try:
        text_encoder = _load_text_encoder(settings)
    except Unavailable as exc:
        raise ComponentUnavailable(f"text encoder unavailable: {exc.message}") from exc
    return RetrievalService(
        clip, text_encoder, settings.data_dir, checkpoint=settings.uclip_checkpoint,
        clip_languages=tuple(getattr(clip, "languages", None) or ("en",)),
        max_upload_bytes=settings.max_upload_bytes, max_batch_texts=settings.max_batch_words)
