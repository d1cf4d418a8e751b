"""Celery task definitions (bodies live in the domain modules they run).

``vislex.align`` is the alignment task; every registered job kind (``services.jobs.kinds``: uCLIP training,
CLIP training, ...) brings its own task, created when its module registers the kind.
"""

from __future__ import annotations

from services.jobs.celery_app import celery_app, ping  # noqa: F401  (registered on import)
from services.jobs.kinds import load_kinds


@celery_app.task(name="vislex.align", acks_late=True)
def align_job(job_id: str, attempt: int) -> dict:
    """Run one alignment job attempt (state, progress and results go to the job store, not the task result)."""
    from services.jobs.runner import run_alignment_job
    from services.jobs.worker import worker_context

    ctx = worker_context()
    return run_alignment_job(ctx.redis, job_id, int(attempt), artifacts_dir=ctx.artifacts_dir,
                             heartbeat_s=ctx.heartbeat_s, settings_loader=ctx.settings_loader)


# --- job kinds: uCLIP training (services/retrieval), CLIP training (services/jobs/clip_jobs), ... ---
load_kinds()
