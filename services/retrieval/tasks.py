"""Celery task for uCLIP training (imported by services/jobs/tasks.py so workers register it).

The task is the job kind's (``services.jobs.kinds.register`` creates ``vislex.uclip_train`` with the kind).
"""

from __future__ import annotations

from services.jobs.kinds import task_of
from services.retrieval.jobs import UCLIP_KIND

uclip_train_job = task_of(UCLIP_KIND)
