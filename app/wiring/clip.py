"""Startup wiring for CLIP training jobs (issue 14): ``runtime.extras["clip_jobs"]``.

A :class:`services.jobs.kinds.KindJobs` of the CLIP kind (``services/jobs/clip_jobs.py``) on the runtime's
Redis, with its reaper thread (stopped before Redis is). Called by the jobs loader: it needs only Redis --
the API never loads a tower, workers do.
"""

from __future__ import annotations

from app.runtime import Runtime


def _clip_sender(runtime: Runtime):
    """How training jobs reach workers (tests replace this): the job service's Celery app, bound to this
    runtime's Redis (the module-level app keeps the broker pool of whichever URL used it first)."""
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import celery_sender

    return celery_sender(CLIP_KIND, getattr(runtime.jobs, "celery", None))


def load(runtime: Runtime) -> None:
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import KindJobs

    settings = runtime.settings
    jobs = KindJobs(CLIP_KIND, runtime.redis, time_limit_s=settings.job_time_limit_s,
                    heartbeat_s=settings.job_heartbeat_s, send_task=_clip_sender(runtime), data_dir=settings.data_dir)
    runtime.extras["clip_jobs"] = jobs
    runtime.extras.setdefault("on_close", []).append(jobs.close)
    jobs.start_monitor()
