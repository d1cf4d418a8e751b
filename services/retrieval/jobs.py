"""uCLIP training jobs: a job kind (``services.jobs.kinds``) whose body trains uCLIP heads.

The kind lives under its own keys (``vislex:uclip:job:{id}``), so uCLIP jobs never show up in (or confuse)
alignment listings. Its body is :func:`services.retrieval.training.run_uclip_training` with the shared
progress callback (progress with the loss is stored after every optimisation step, and cancel and time limit
are checked there, so a cancelled run stops before its next step); on success the new checkpoint becomes
active (pointer file), and API processes swap to it without restart. Submission, views, cancel, reaping and
the Celery task ``vislex.uclip_train`` are the kind machinery's.
"""

from __future__ import annotations

from typing import Any

import redis

from services.jobs.execution import ProgressFn
from services.jobs.kinds import JobKind, KindJobs, KindJobStore, celery_sender, register, run_kind_job
from services.jobs.recovery import SendTask

UCLIP_TASK = "vislex.uclip_train"


def _train(params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
    from services.retrieval.training import run_uclip_training

    return run_uclip_training(params, progress)


def _inputs(params: dict[str, Any]) -> dict[str, Any]:
    """What a job view shows of its params: counts of inline texts, not the texts."""
    return {"images_dir": params.get("images_dir"), "text_encoder": params.get("text_encoder"),
            "queries": len(params.get("queries") or []), "texts": len(params.get("texts") or []),
            "queries_files": params.get("queries_files"), "texts_files": params.get("texts_files"),
            "config": params.get("config") or {}}


def _result(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "history"}


UCLIP_KIND = register(JobKind(name="uclip", label="uCLIP training", task_name=UCLIP_TASK, run=_train,
                              id_prefix="u", default_queue="heavy", inputs=_inputs, result_view=_result,
                              artifact="checkpoint"))


class UclipJobStore(KindJobStore):
    """The job store under uCLIP's keys."""

    def __init__(self, client: redis.Redis, **kwargs: Any):
        super().__init__(UCLIP_KIND, client, **kwargs)


def celery_uclip_sender(app=None) -> SendTask:
    return celery_sender(UCLIP_KIND, app)


class UclipTrainingJobs(KindJobs):
    """API side of uCLIP training: submit (content-addressed), view, list, cancel, reap lost workers."""

    def __init__(self, client: redis.Redis, *, time_limit_s: float, heartbeat_s: float,
                 send_task: SendTask | None = None, max_retries: int = 1, celery=None):
        super().__init__(UCLIP_KIND, client, time_limit_s=time_limit_s, heartbeat_s=heartbeat_s,
                         send_task=send_task, max_retries=max_retries, celery=celery)


def run_uclip_job(client: redis.Redis, job_id: str, attempt: int, *, heartbeat_s: float,
                  max_retries: int = 1) -> dict[str, Any]:
    """Task body (in the worker): claim, heartbeat, train with progress/cancel, record the outcome."""
    return run_kind_job(UCLIP_KIND, client, job_id, attempt, heartbeat_s=heartbeat_s, max_retries=max_retries)
