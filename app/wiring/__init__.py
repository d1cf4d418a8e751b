"""Loaders run in order at startup: (component name, required for readiness, loader)."""

from __future__ import annotations

from app.runtime import connect_redis
from app.wiring import jobs, retrieval, sentences, serving, vision

LOADERS = [
    ("redis", True, connect_redis),
    ("jobs", True, jobs.load),
    ("spaces", True, serving.load),
    ("clip", False, vision.load),
    ("uclip", False, retrieval.load),
    ("sentences", False, sentences.load),
]
