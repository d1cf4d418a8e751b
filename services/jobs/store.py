"""Job state in Redis: every transition is one atomic Lua script, so API replicas and workers never race.

Keys (all under ``vislex:``):
- ``job:{id}`` hash -- state, spec (JSON), timestamps, attempt token, progress (JSON), result/error (JSON);
- ``job:{id}:losses`` list of per-iteration validation losses (JSON numbers);
- ``job:{id}:heartbeat`` written by the running worker with a TTL (expired = worker lost);
- ``job:{id}:cancel`` flag checked at every iteration boundary;
- ``jobs`` sorted set id -> created_at (listing), ``jobs:active`` set of queued/running ids (reaper).

Hash field ``sent_at`` marks that the task message of the current attempt reached the broker
(unset: the send failed or never happened -- the reaper re-sends it after a grace period).

The ``attempt`` token guards against duplicate deliveries: a task message carries the
attempt it was sent for and may only claim/finish the job while that attempt is current.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from services.errors import NotFound

PREFIX = "vislex:"
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")

# Create the job unless it exists; a failed/cancelled job with the same id is reset to a fresh run.
_CREATE = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
  return {'created', '1'}
end
if st == 'failed' or st == 'cancelled' then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
  redis.call('HDEL', KEYS[1], 'error', 'result', 'progress', 'started_at', 'finished_at', 'worker', 'cancel_requested',
             'sent_at', 'send_failures')
  redis.call('HSET', KEYS[1], 'state', 'queued', 'retries', '0', 'queued_at', ARGV[2], 'updated_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'runs', 1)
  redis.call('DEL', KEYS[1] .. ':losses', KEYS[1] .. ':cancel')
  redis.call('SADD', KEYS[3], ARGV[1])
  return {'requeued', tostring(attempt)}
end
return {'exists', st}
"""

# A worker takes the job for the attempt its message names.
_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing'} end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return {'stale'} end
local function take()
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[2], 'updated_at', ARGV[2], 'worker', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
if st == 'queued' then
  take()
  return {'claimed'}
end
if st == 'running' and redis.call('EXISTS', KEYS[2]) == 0 then
  -- Celery redelivered the message of a worker that died mid-job: retry once, then give up.
  local retries = tonumber(redis.call('HGET', KEYS[1], 'retries') or '0')
  if retries < tonumber(ARGV[5]) then
    redis.call('HINCRBY', KEYS[1], 'retries', 1)
    take()
    return {'reclaimed'}
  end
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[2], 'updated_at', ARGV[2], 'error', ARGV[6])
  redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
  return {'failed'}
end
return {st}
"""

def _finish_script(first_field: int, then: str = "") -> str:
    """The worker records the outcome (job hash fields from ARGV[first_field] on), unless its attempt was superseded;
    ``then`` runs in the same atomic step before it returns 1."""
    return f"""
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, {first_field}))
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[1] .. ':cancel')
{then}return 1
"""


# KEYS: job, active, heartbeat; ARGV: attempt, job id, then the job hash fields.
_FINISH = _finish_script(3)

# Success and the mapping's publication in one step: no reader ever sees 'succeeded' before the new version is
# published (key, pair index, pub/sub message to every API replica). KEYS: job, active, heartbeat, mapping key,
# pair index; ARGV: attempt, job id, channel, pair, key payload, message, then the job hash fields.
_FINISH_PUBLISH = _finish_script(7, """redis.call('SET', KEYS[4], ARGV[5])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[6])
""")

_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1], 'updated_at', ARGV[1],
             'error', ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 'cancelled_now'
end
if st == 'running' then
  redis.call('SET', KEYS[2], '1')
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
  return 'cancelling'
end
return st
"""

# A running job whose heartbeat expired: re-queue it once (new attempt) or fail it.
_REAP = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'running' then return {'skip'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'alive'} end
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or ARGV[1])
if tonumber(ARGV[1]) - started < tonumber(ARGV[4]) then return {'young'} end
local retries = tonumber(redis.call('HGET', KEYS[1], 'retries') or '0')
if retries < tonumber(ARGV[2]) then
  local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
  redis.call('HINCRBY', KEYS[1], 'retries', 1)
  redis.call('HSET', KEYS[1], 'state', 'queued', 'queued_at', ARGV[1], 'updated_at', ARGV[1], 'worker', '')
  redis.call('HDEL', KEYS[1], 'started_at', 'progress', 'sent_at', 'send_failures')
  redis.call('DEL', KEYS[1] .. ':losses')
  return {'requeued', tostring(attempt)}
end
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[1], 'updated_at', ARGV[1], 'error', ARGV[3])
redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
return {'failed'}
"""

# The message of this attempt reached the broker.
_MARK_SENT = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sent_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'send_failures')
return 1
"""

# Sending this attempt's message failed; after ARGV[3] failures the queued job fails (it would never start).
_SEND_FAILED = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 'stale' end
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 'stale' end
local n = redis.call('HINCRBY', KEYS[1], 'send_failures', 1)
if n < tonumber(ARGV[3]) then return 'retry' end
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[2], 'updated_at', ARGV[2], 'error', ARGV[4])
redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
return 'failed'
"""


@dataclass(frozen=True)
class Publication:
    """A mapping version made the served one for ``pair``: a key, a pair index entry and a pub/sub message."""

    key: str
    index_key: str
    pair: str
    channel: str
    payload: str
    message: str


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class JobRecord:
    """A decoded job hash."""

    id: str
    state: str
    spec: dict[str, Any]
    created_at: float
    attempt: int
    retries: int
    runs: int
    queued_at: float | None
    sent_at: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float | None
    worker: str | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cancel_requested: bool
    losses: list[float]

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes], losses: list[bytes]) -> "JobRecord":
        h = {_s(k): _s(v) for k, v in raw.items()}

        def num(key: str) -> float | None:
            return float(h[key]) if h.get(key) else None

        def js(key: str) -> Any:
            return json.loads(h[key]) if h.get(key) else None

        return cls(
            id=h["id"], state=h["state"], spec=js("spec") or {}, created_at=float(h["created_at"]),
            attempt=int(h.get("attempt", 1)), retries=int(h.get("retries", 0) or 0), runs=int(h.get("runs", 1)),
            queued_at=num("queued_at"), sent_at=num("sent_at"), started_at=num("started_at"), finished_at=num("finished_at"),
            updated_at=num("updated_at"), worker=h.get("worker") or None, progress=js("progress"),
            result=js("result"), error=js("error"), cancel_requested=h.get("cancel_requested") == "1",
            losses=[float(json.loads(_s(x))) for x in losses],
        )


class JobStore:
    """Atomic job-state operations over one Redis client (thread-safe; one per process)."""

    def __init__(self, client: redis.Redis, *, heartbeat_ttl_s: float = 15.0, max_retries: int = 1):
        self.redis = client
        self.heartbeat_ttl_ms = max(int(heartbeat_ttl_s * 1000), 100)
        self.max_retries = max_retries
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._finish_publish = client.register_script(_FINISH_PUBLISH)
        self._cancel = client.register_script(_CANCEL)
        self._reap = client.register_script(_REAP)
        self._mark_sent = client.register_script(_MARK_SENT)
        self._send_failed = client.register_script(_SEND_FAILED)

    # ---- keys ---------------------------------------------------------------------
    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    def heartbeat_key(self, job_id: str) -> str:
        return f"{self.key(job_id)}:heartbeat"

    def cancel_key(self, job_id: str) -> str:
        return f"{self.key(job_id)}:cancel"

    INDEX = f"{PREFIX}jobs"
    ACTIVE = f"{PREFIX}jobs:active"

    # ---- transitions ----------------------------------------------------------------
    def create(self, job_id: str, spec: dict[str, Any], *, pair: str, method: str) -> tuple[str, int | str]:
        """('created', 1) | ('requeued', attempt) | ('exists', state) -- atomically."""
        now = time.time()
        fields = {
            "id": job_id, "state": "queued", "spec": json.dumps(spec, sort_keys=True), "pair": pair,
            "method": method, "created_at": now, "queued_at": now, "updated_at": now,
            "attempt": 1, "retries": 0, "runs": 1,
        }
        flat: list[Any] = [job_id, now]
        for k, v in fields.items():
            flat += [k, v]
        status, value = self._create(keys=[self.key(job_id), self.INDEX, self.ACTIVE], args=flat)
        status, value = _s(status), _s(value)
        return status, (int(value) if status in ("created", "requeued") else value)

    def mark_sent(self, job_id: str, attempt: int) -> bool:
        """Record that the task message of ``attempt`` is in the broker (False: attempt superseded)."""
        return bool(self._mark_sent(keys=[self.key(job_id)], args=[str(attempt), time.time()]))

    def send_failed(self, job_id: str, attempt: int, *, max_failures: int, message: str) -> str:
        """Count a failed send of ``attempt``: 'retry' | 'failed' (gave up: job failed) | 'stale'."""
        error = json.dumps({"code": "enqueue_failed", "message": message})
        return _s(self._send_failed(keys=[self.key(job_id), self.ACTIVE],
                                    args=[str(attempt), time.time(), max_failures, error]))

    def claim(self, job_id: str, attempt: int, worker: str) -> str:
        """'claimed' | 'reclaimed' (redelivery after a lost worker) | 'stale' | 'failed' | current state."""
        error = json.dumps({"code": "worker_lost", "message": "worker lost (killed or crashed) while running the job"})
        res = self._claim(
            keys=[self.key(job_id), self.heartbeat_key(job_id), self.ACTIVE],
            args=[str(attempt), time.time(), worker, self.heartbeat_ttl_ms, self.max_retries, error],
        )
        return _s(res[0])

    def beat(self, job_id: str, worker: str) -> None:
        self.redis.set(self.heartbeat_key(job_id), worker, px=self.heartbeat_ttl_ms)

    def report_progress(self, job_id: str, attempt: int, progress: dict[str, Any], loss: float | None) -> tuple[bool, bool]:
        """Store progress; return (cancel requested, still the current attempt) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key(job_id), mapping={"progress": json.dumps(progress), "updated_at": time.time()})
        if loss is not None:
            pipe.rpush(f"{self.key(job_id)}:losses", json.dumps(loss))
        pipe.exists(self.cancel_key(job_id))
        pipe.hget(self.key(job_id), "attempt")
        out = pipe.execute()
        current = out[-1] is not None and int(out[-1]) == attempt
        return bool(out[-2]), current

    def finish(self, job_id: str, attempt: int, state: str, *, result: dict | None = None,
               error: dict | None = None, progress: dict | None = None,
               publish: "Publication | None" = None) -> bool:
        """Record the outcome of ``attempt`` (False: superseded); ``publish`` makes a mapping the served one
        for its pair atomically with the transition."""
        now = time.time()
        fields: dict[str, Any] = {"state": state, "finished_at": now, "updated_at": now}
        if result is not None:
            fields["result"] = json.dumps(result)
        if error is not None:
            fields["error"] = json.dumps(error)
        if progress is not None:
            fields["progress"] = json.dumps(progress)
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        keys = [self.key(job_id), self.ACTIVE, self.heartbeat_key(job_id)]
        if publish is None:
            return bool(self._finish(keys=keys, args=[str(attempt), job_id, *flat]))
        return bool(self._finish_publish(
            keys=[*keys, publish.key, publish.index_key],
            args=[str(attempt), job_id, publish.channel, publish.pair, publish.payload, publish.message, *flat]))

    def cancel(self, job_id: str) -> str:
        """'cancelled_now' (was queued: cancelled by this call) | 'cancelling' (running; stops at its next iteration)
        | the final state it already had ('succeeded', 'failed', 'cancelled') | 'missing'."""
        error = json.dumps({"code": "cancelled", "message": "cancelled before it started"})
        return _s(self._cancel(keys=[self.key(job_id), self.cancel_key(job_id), self.ACTIVE],
                               args=[time.time(), job_id, error]))

    def reap(self, job_id: str, *, min_age_s: float = 0.0, reason: str | None = None) -> tuple[str, int | None]:
        error = json.dumps({"code": "worker_lost",
                            "message": reason or "worker lost (killed or crashed) while running the job; retried once"})
        res = self._reap(keys=[self.key(job_id), self.heartbeat_key(job_id), self.ACTIVE],
                         args=[time.time(), self.max_retries, error, min_age_s])
        status = _s(res[0])
        return status, (int(_s(res[1])) if status == "requeued" else None)

    def fail_now(self, job_id: str, error: dict[str, Any]) -> None:
        """Fail a running job from outside its worker (time limit seen by the reaper)."""
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(self.key(job_id), mapping={"state": "failed", "finished_at": now, "updated_at": now,
                                             "error": json.dumps(error)})
        pipe.srem(self.ACTIVE, job_id)
        pipe.execute()

    # ---- reads -----------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key(job_id))
        pipe.lrange(f"{self.key(job_id)}:losses", 0, -1)
        raw, losses = pipe.execute()
        if not raw:
            raise NotFound(f"no alignment job {job_id!r}", detail={"job_id": job_id})
        return JobRecord.from_hash(raw, losses)

    def heartbeat_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.heartbeat_key(job_id)))

    def active_ids(self) -> list[str]:
        return sorted(_s(x) for x in self.redis.smembers(self.ACTIVE))

    def list(self, *, state: str | None = None, pair: str | None = None, offset: int = 0,
             limit: int = 50) -> tuple[list[JobRecord], int]:
        """Newest first; filters applied over the index (job counts are small: hundreds, not millions)."""
        ids = [_s(x) for x in self.redis.zrevrange(self.INDEX, 0, -1)]
        if not ids:
            return [], 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.key(job_id), "state", "pair")
        meta = pipe.execute()
        keep = [
            job_id for job_id, (st, pr) in zip(ids, meta)
            if st is not None and (state is None or _s(st) == state) and (pair is None or _s(pr) == pair)
        ]
        page = [self.get(job_id) for job_id in keep[offset: offset + limit]]
        return page, len(keep)
