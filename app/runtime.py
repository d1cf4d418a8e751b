"""The runtime: every long-lived object the API serves from, built once in the lifespan.

Components load in a background thread so ``/healthz`` answers at once and
``/readyz`` reports what is still loading. Each feature's loader lives in
``app/wiring/<feature>.py`` as ``load(runtime)``; it stores what it built on the
runtime and raises :class:`ComponentUnavailable` when an optional dependency
(e.g. CLIP weights) is absent -- the service still becomes ready without it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from app.settings import Settings
from services.errors import Unavailable
from services.infra.redis import EmbeddedRedis, connect, embedded_redis_dir

log = logging.getLogger(__name__)


class ComponentUnavailable(Exception):
    """An optional component cannot load here (missing weights, no images); not a failure."""


@dataclass
class ComponentState:
    state: str = "pending"  # pending | loading | ready | unavailable | failed
    reason: str | None = None
    required: bool = True
    seconds: float | None = None
    # Live progress of a long load (e.g. languages built / total), shown by /readyz.
    progress: dict[str, Any] | None = None
    # Set by a loader once what it has built so far can answer requests (e.g. the languages built first).
    serves_partially: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = {"state": self.state, "reason": self.reason, "required": self.required, "seconds": self.seconds}
        if self.progress is not None:
            out["progress"] = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                               for k, v in self.progress.items()}
        return out


@dataclass
class Runtime:
    settings: Settings
    redis_url: str | None = None
    redis: redis.Redis | None = None
    embedded_redis: EmbeddedRedis | None = None
    components: dict[str, ComponentState] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    # Feature objects, set by app/wiring loaders (None until loaded).
    spaces: Any = None  # services.serving: word spaces, mappings, translator
    cache: Any = None  # services.serving cache
    jobs: Any = None  # services.jobs: job service
    vision: Any = None  # services.vision: CLIP encoders, fingerprints
    retrieval: Any = None  # services.retrieval: uCLIP heads, galleries, captions
    extras: dict[str, Any] = field(default_factory=dict)
    redis_probe: redis.Redis | None = None  # short-timeout client for /readyz
    _thread: threading.Thread | None = None
    _redis_start_error: Exception | None = None

    # ---- lifecycle -------------------------------------------------------------
    def start(self, *, background: bool = True) -> None:
        from app.wiring import LOADERS

        for name, required, _ in LOADERS:
            self.components[name] = ComponentState(required=required)
        # The embedded server starts here, in the lifespan, not in the loader thread: it must live as long
        # as the app (stopped in close()), whatever thread loads the rest. A start failure is reported by
        # the 'redis' component (/readyz), never crashes the API.
        if self.settings.redis_url is None:
            self.embedded_redis = EmbeddedRedis(embedded_redis_dir(self.settings.data_dir))
            try:
                self.embedded_redis.start()
            except (Unavailable, OSError) as exc:
                self._redis_start_error = exc
        if background:
            self._thread = threading.Thread(target=self._load_all, name="vislex-loader", daemon=True)
            self._thread.start()
        else:
            self._load_all()

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _load_all(self) -> None:
        from app.wiring import LOADERS

        for name, _required, loader in LOADERS:
            self._load_one(name, loader)

    def _load_one(self, name: str, loader: Callable[["Runtime"], None]) -> None:
        state = self.components[name]
        state.state = "loading"
        start = time.perf_counter()
        try:
            loader(self)
            state.state = "ready"
        except ComponentUnavailable as exc:
            state.state, state.reason = "unavailable", str(exc)
            log.warning("component unavailable", extra={"component": name, "reason": str(exc)})
        except Exception as exc:  # a failed component is reported by /readyz, never crashes the API
            state.state, state.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("component failed to load", extra={"component": name})
        state.seconds = round(time.perf_counter() - start, 3)
        log.info("component loaded", extra={"component": name, "state": state.state, "seconds": state.seconds})

    def close(self) -> None:
        # --- serving feature: stop background threads registered by wiring modules ---
        for hook in self.extras.get("on_close", []):
            try:
                hook()
            except Exception:
                log.exception("close hook failed")
        # --- end serving feature ---
        if self.jobs is not None and hasattr(self.jobs, "close"):
            self.jobs.close()
        for client in (self.redis, self.redis_probe):
            if client is not None:
                client.close()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()

    # ---- readiness -------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return components_ready({n: s.as_dict() for n, s in self.components.items()})

    def redis_unreachable_reason(self) -> str | None:
        """None when Redis answers PING now; else why not (checked live by /readyz, short timeout)."""
        client = self.redis_probe or self.redis
        if client is None:
            return "not connected"
        try:
            client.ping()
            return None
        except (redis.RedisError, OSError) as exc:  # any failure means: not ready to serve
            return f"{type(exc).__name__}: {exc}"

    def not_ready_reasons(self) -> dict[str, dict[str, Any]]:
        return {n: s.as_dict() for n, s in self.components.items() if s.state != "ready"}

    def require(self, component: str) -> None:
        """Raise 503 naming why ``component`` cannot serve this request."""
        state = self.components.get(component)
        if state is not None and state.state == "loading" and state.serves_partially:
            return  # what is built answers; what is not raises its own 503 (e.g. space_loading)
        if state is None or state.state != "ready":
            what = state.state if state else "not configured"
            reason = (state.reason if state else None) or what
            raise Unavailable(f"{component} is {what}: {reason}", detail={"component": component, "state": what})


def components_ready(components: dict[str, dict[str, Any]]) -> bool:
    """Every required component is ready. Optional ones (CLIP, uCLIP) never hold readiness back, loading or
    not: their endpoints answer 503 with the reason until they are, and /readyz shows their state."""
    return bool(components) and all(c["state"] == "ready" for c in components.values() if c["required"])


def connect_redis(runtime: Runtime) -> None:
    """Loader for the 'redis' component: the external URL, or the embedded server the lifespan started."""
    settings = runtime.settings
    url = settings.redis_url
    if url is None:
        if runtime._redis_start_error is not None:
            raise runtime._redis_start_error
        if runtime.embedded_redis is None:  # Runtime used without start(): start it here
            runtime.embedded_redis = EmbeddedRedis(embedded_redis_dir(settings.data_dir))
            runtime.embedded_redis.start()
        url = runtime.embedded_redis.url
    client = connect(url, timeout=settings.redis_timeout_s)
    client.ping()
    runtime.redis_url, runtime.redis = url, client
    runtime.redis_probe = connect(url, timeout=1.0)
