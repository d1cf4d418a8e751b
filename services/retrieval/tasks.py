"""Celery task for uCLIP training (imported by services/jobs/tasks.py so workers register it)."""

from __future__ import annotations

from services.jobs.celery_app import celery_app


@celery_app.task(name="vislex.uclip_train", acks_late=True)
def uclip_train_job(job_id: str, attempt: int) -> dict:
    """Run one uCLIP training attempt (state, progress and result live in the uCLIP job store)."""
    from services.jobs.worker import worker_context
    from services.retrieval.jobs import run_uclip_job

    ctx = worker_context()
    return run_uclip_job(ctx.redis, job_id, int(attempt), heartbeat_s=ctx.heartbeat_s)
