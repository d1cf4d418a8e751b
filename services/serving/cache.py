"""Redis cache of translation results, keyed by mapping version, retrieval, k and word.

The mapping version is part of every key, so a newly installed mapping can never be served
stale results: its keys are simply different (old ones expire by TTL). Values are the JSON
text of the translations list, spliced verbatim into responses. Batches use one MGET and one
pipelined write. Redis trouble degrades to "miss" (never fails a translation) and pauses the
cache briefly instead of paying a timeout per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from services.observability import CACHE_EVENTS

log = logging.getLogger(__name__)

__all__ = ["TranslationCache", "CACHE_PREFIX"]

CACHE_PREFIX = "vislex:tr:"
_PAUSE_AFTER_ERROR_S = 5.0


class TranslationCache:
    """GET/MGET/pipelined SET of translation results with hit/miss counters (services.observability)."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = 86400, prefix: str = CACHE_PREFIX):
        self.client = client
        self.ttl_s = int(ttl_s)
        self.prefix = prefix
        self._paused_until = 0.0
        self._hit = CACHE_EVENTS.labels("hit")
        self._miss = CACHE_EVENTS.labels("miss")

    def key(self, src: str, tgt: str, version: str, retrieval: str, k: int, word_key: str) -> str:
        return f"{self.prefix}{src}:{tgt}:{version}:{retrieval}:{k}:{word_key}"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._paused_until

    def _failed(self, exc: Exception) -> None:
        self._paused_until = time.monotonic() + _PAUSE_AFTER_ERROR_S
        log.warning("translation cache unavailable; pausing it", extra={"error": str(exc),
                                                                        "pause_s": _PAUSE_AFTER_ERROR_S})

    def get(self, key: str) -> str | None:
        """The cached value (counted as hit) or None (counted as miss)."""
        if not self.available:
            self._miss.inc()
            return None
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            self._failed(exc)
            raw = None
        if raw is None:
            self._miss.inc()
            return None
        self._hit.inc()
        return raw.decode("utf-8") if isinstance(raw, bytes) else raw

    def get_many(self, keys: list[str]) -> list[str | None]:
        """One MGET for all keys; counts hits and misses."""
        if not keys:
            return []
        values: list[Any]
        if not self.available:
            values = [None] * len(keys)
        else:
            try:
                values = self.client.mget(keys)
            except redis.RedisError as exc:
                self._failed(exc)
                values = [None] * len(keys)
        out = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
        hits = sum(1 for v in out if v is not None)
        if hits:
            self._hit.inc(hits)
        if len(out) - hits:
            self._miss.inc(len(out) - hits)
        return out

    def set(self, key: str, value: str) -> None:
        if not self.available:
            return
        try:
            self.client.set(key, value, ex=self.ttl_s)
        except redis.RedisError as exc:
            self._failed(exc)

    def set_many(self, items: dict[str, str]) -> None:
        """All writes in one pipelined round trip."""
        if not items or not self.available:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, value, ex=self.ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)

    def describe(self) -> dict[str, Any]:
        return {"enabled": True, "ttl_s": self.ttl_s, "available": self.available}
