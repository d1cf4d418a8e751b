"""Startup wiring for sentence translation by retrieval: the sentence service (collections + active model).

Sets ``runtime.extras["globetrotter_jobs"]`` (training jobs, a :class:`services.jobs.kinds.KindJobs`) and
``runtime.extras["sentences"]`` (:class:`services.sentences.service.SentenceService`). The default
model is the server's multilingual encoder (``VISLEX_TEXT_ENCODER``, shared with the encoder-derived word
spaces: loaded once per process), unless ``VISLEX_SENTENCE_MODEL`` or an activated checkpoint names another.
An optional component: a missing encoder makes /v1/sentences answer 503 with the reason, never holds
readiness back.
"""

from __future__ import annotations

from typing import Any

from app.runtime import ComponentUnavailable, Runtime
from services.errors import Unavailable


def _encoder_loader(name: str) -> Any:
    """Encoders by name through models.text_encoders (its per-process cache: the word spaces' encoder is reused)."""
    from models.text_encoders import load_text_encoder

    return load_text_encoder(name)


def _model_loader():
    from services.sentences.models import load_sentence_model

    return lambda spec: load_sentence_model(spec, encoder_loader=_encoder_loader)


def _globetrotter_sender(runtime: Runtime):
    """How training jobs reach workers (tests replace this): Celery bound to this runtime's Redis."""
    from services.jobs.kinds import celery_sender
    from services.sentences.jobs import GLOBETROTTER_KIND

    return celery_sender(GLOBETROTTER_KIND, getattr(runtime.jobs, "celery", None))


def _load_jobs(runtime: Runtime) -> None:
    """Training jobs first: they need only Redis (workers load the towers), so they queue even without a model."""
    from services.jobs.kinds import KindJobs
    from services.sentences.jobs import GLOBETROTTER_KIND

    settings = runtime.settings
    jobs = KindJobs(GLOBETROTTER_KIND, runtime.redis, time_limit_s=settings.job_time_limit_s,
                    heartbeat_s=settings.job_heartbeat_s, send_task=_globetrotter_sender(runtime),
                    data_dir=settings.data_dir)
    runtime.extras["globetrotter_jobs"] = jobs
    runtime.extras.setdefault("on_close", []).append(jobs.close)
    jobs.start_monitor()


def load(runtime: Runtime) -> None:
    from services.sentences.service import SentenceService

    settings = runtime.settings
    if runtime.redis is not None:
        _load_jobs(runtime)
    try:
        runtime.extras["sentences"] = SentenceService(
            settings.data_dir, model=settings.sentence_model, default_encoder=settings.text_encoder,
            loader=_model_loader(), max_batch=settings.sentence_max_batch, max_chars=settings.sentence_max_chars,
            max_add=settings.sentence_max_add, storage_dtype=settings.sentence_storage_dtype)
    except Unavailable as exc:
        raise ComponentUnavailable(f"sentence model unavailable: {exc.message}") from exc
