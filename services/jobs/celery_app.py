"""The Celery application: Redis as broker and result backend.

Configured by :func:`configure` from the entry point (API runtime or worker CLI),
never at import time, so importing task modules loads no model and opens no
connection. Tasks must load models lazily inside the worker process (prefork
children are forked before any model is touched).
"""

from __future__ import annotations

import os
import socket

from celery import Celery
from kombu import Queue

LIGHT_QUEUE = "light"  # CPU-light tasks: bookkeeping, small alignments
HEAVY_QUEUE = "heavy"  # GPU/CPU-heavy tasks: large alignments, CLIP encoding, uCLIP training

celery_app = Celery("vislex", include=["services.jobs.tasks"])


def configure(redis_url: str, *, time_limit_s: int = 3600, app: Celery = celery_app) -> Celery:
    """Point the app at Redis with the delivery guarantees vislex relies on."""
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only after it finishes, so a worker killed mid-task
        # leaves the message to be redelivered; prefetch 1 keeps that to one task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=time_limit_s + 60,
        task_soft_time_limit=time_limit_s,
        # Redelivery of unacked tasks happens after the visibility timeout: longer than the longest job.
        broker_transport_options={"visibility_timeout": 2 * time_limit_s + 600},
        result_backend_transport_options={"visibility_timeout": 2 * time_limit_s + 600},
        result_expires=7 * 24 * 3600,
        task_default_queue=LIGHT_QUEUE,
        task_queues=(Queue(LIGHT_QUEUE), Queue(HEAVY_QUEUE)),
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


@celery_app.task(name="vislex.ping")
def ping() -> dict:
    """Round-trip check: which worker process answered."""
    return {"pid": os.getpid(), "hostname": socket.gethostname()}


def live_workers(app: Celery = celery_app, timeout: float = 1.0) -> int:
    """Number of workers answering a broadcast ping within ``timeout``."""
    try:
        replies = app.control.ping(timeout=timeout)
    except Exception:  # broker unreachable: reported as zero workers, not an error
        return 0
    return len(replies or [])
