"""Metrics and structured logs shared by the API and the workers.

Metric objects live here (not in app/) because domain code times its own
stages (encode, search, csls, cache) and counts cache hits.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUEST_SECONDS = Histogram(
    "vislex_request_seconds", "HTTP request latency", ["method", "route", "status"], buckets=_BUCKETS
)
STAGE_SECONDS = Histogram("vislex_stage_seconds", "Time per processing stage", ["stage"], buckets=_BUCKETS)
CACHE_EVENTS = Counter("vislex_cache_total", "Translation cache lookups", ["result"])
SEARCH_BATCH = Histogram("vislex_search_batch_size", "Queries per batched single-word search",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
TABLE_WORDS = Counter("vislex_table_words_total", "Words answered from precomputed translation tables",
                      ["retrieval"])
IN_FLIGHT = Gauge("vislex_requests_in_flight", "HTTP requests being served")
REJECTED = Counter("vislex_requests_rejected_total", "Requests rejected with 429 (overload)")


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Record the wall time of a block in the per-stage histogram."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - start)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    _SKIP = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                payload[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: str = "info", json_logs: bool = True) -> None:
    """Route every logger to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One access line per request: the API's own structured ``vislex.access`` (request id, latency).
    # uvicorn's would repeat it whenever uvicorn runs with its default access log (``uvicorn app...``).
    logging.getLogger("uvicorn.access").disabled = True
