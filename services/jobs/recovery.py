"""Recovering jobs that would otherwise never finish, for every kind of job: sending, re-sending, reaping.

- :func:`send_job` sends an attempt's task message and records that it reached the broker (``sent_at``), or
  counts the failure (after ``MAX_SEND_FAILURES`` the queued job fails ``enqueue_failed``: it would never start);
- :func:`reap_lost_jobs` re-queues once (then fails ``worker_lost``) running jobs whose heartbeat expired,
  fails those past their time limit, and re-sends queued jobs whose message never reached the broker or is
  no longer in it. A duplicate message is harmless: a worker claims a job only for the attempt it names.

The API's monitor threads (alignments, every registered job kind) and each starting worker call it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import redis

from services.errors import NotFound
from services.jobs.store import JobRecord, JobStore

log = logging.getLogger(__name__)

SendTask = Callable[[str, int, dict[str, Any]], None]

# A queued job whose message is not in the broker this long after it was queued/sent is re-sent.
RESEND_GRACE_S = 30.0
MAX_SEND_FAILURES = 5
# kombu's Redis transport: queue lists per priority step (name + sep + step), and delivered-unacked messages.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"


def broker_messages(client: redis.Redis, queues: tuple[str, ...] = ("light", "heavy")) -> list[bytes]:
    """Raw task messages the Redis broker holds: waiting in a queue (any priority) or delivered, unacked."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for name in (queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)):
            pipe.lrange(name, 0, -1)
    pipe.hvals(_UNACKED_KEY)
    out: list[bytes] = []
    for part in pipe.execute():
        out.extend(part)
    return out


def send_job(store: JobStore, send: SendTask, job_id: str, attempt: int, spec: dict[str, Any], *,
             max_failures: int = MAX_SEND_FAILURES) -> str:
    """Send one attempt's message and record it: 'sent' | 'send_error' (retried later) | 'failed' (gave up)."""
    try:
        send(job_id, attempt, spec)
    except Exception as exc:  # broker hiccup, serialisation bug...: the job stays queued, unsent
        log.warning("sending the job's task failed", exc_info=True, extra={"job_id": job_id, "attempt": attempt})
        outcome = store.send_failed(job_id, attempt, max_failures=max_failures,
                                    message=f"could not enqueue the job ({type(exc).__name__}: {exc})")
        return "failed" if outcome == "failed" else "send_error"
    store.mark_sent(job_id, attempt)
    return "sent"


def _queued_message_lost(job: JobRecord, now: float, grace_s: float, broker_raw: Callable[[], list[bytes]] | None
                         ) -> bool:
    """A queued job needs its message (re-)sent: never sent, or sent but gone from the broker, past the grace."""
    since = job.sent_at or job.queued_at or job.created_at
    if now - since < grace_s:
        return False
    if job.sent_at is None:
        return True
    if broker_raw is None:
        return False  # cannot look into the broker: trust the recorded send
    task_id = f"{job.id}-{job.attempt}".encode()
    return not any(task_id in raw for raw in broker_raw())


def reap_lost_jobs(store: JobStore, send: SendTask, *, grace_s: float = 0.0, queued_grace_s: float | None = None,
                   broker: redis.Redis | None = None, max_send_failures: int = MAX_SEND_FAILURES
                   ) -> dict[str, list[str]]:
    """Recover jobs that would otherwise never finish; returns what was done.

    - running, heartbeat expired: re-queued once (new attempt), then failed "worker lost";
    - queued (when ``queued_grace_s`` is given): the message of the current attempt is re-sent when it was
      never sent, or -- with ``broker`` to look into -- is neither waiting in a queue nor delivered (unacked).
      A job merely waiting its turn in the broker is left alone; a duplicate message is harmless anyway,
      because a worker may only claim a queued job for the attempt its message names.
    """
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "resent": []}
    cache: list[list[bytes]] = []

    def broker_raw() -> list[bytes]:  # fetched at most once per pass, and only if a queued job needs it
        if not cache:
            cache.append(broker_messages(broker))
        return cache[0]

    for job_id in store.active_ids():
        try:
            if store.heartbeat_alive(job_id):
                continue
            job = store.get(job_id)
            if job.state == "queued" and queued_grace_s is not None:
                if _queued_message_lost(job, time.time(), queued_grace_s, broker_raw if broker is not None else None):
                    log.warning("re-sending a queued job whose message is missing",
                                extra={"job_id": job_id, "attempt": job.attempt, "sent_before": job.sent_at is not None})
                    outcome = send_job(store, send, job_id, job.attempt, job.spec, max_failures=max_send_failures)
                    if outcome == "sent":
                        done["resent"].append(job_id)
                    elif outcome == "failed":
                        done["failed"].append(job_id)
                continue
            if job.state != "running":
                continue
            limit = float(job.spec.get("time_limit_s", 3600))
            if job.started_at is not None and time.time() - job.started_at > limit:
                store.fail_now(job_id, {"code": "time_limit_exceeded",
                                        "message": f"time limit exceeded ({limit:g} s); worker stopped responding"})
                done["failed"].append(job_id)
                continue
            status, attempt = store.reap(job_id, min_age_s=grace_s)
            if status == "requeued" and attempt is not None:
                log.warning("job requeued after worker loss", extra={"job_id": job_id, "attempt": attempt})
                send_job(store, send, job_id, attempt, job.spec, max_failures=max_send_failures)
                done["requeued"].append(job_id)
            elif status == "failed":
                log.warning("job failed: worker lost", extra={"job_id": job_id})
                done["failed"].append(job_id)
        except NotFound:
            continue
    return done
