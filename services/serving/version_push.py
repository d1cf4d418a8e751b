"""New mapping versions pushed to this API process the moment a job publishes them.

A job's success and its mapping's publication are one atomic step in Redis (``JobStore.finish``),
which also sends a pub/sub message on ``vislex:mappings``. One thread per API process listens on
that channel and installs the version at once: for a new pair the mapping is served for NN right
away and its CSLS r_S is computed next (a CSLS request in between waits for it instead of getting
a 404); a newer version of a served pair swaps in the same way. While a version is being installed
the pair answers 503 ``installing`` with Retry-After, never 404 (``SpaceRegistry.installing``).

Pub/sub drops messages sent while a subscriber is disconnected: on every (re)subscribe the thread
catches up from the published keys, and the serving layer's periodic ``sync_from_redis`` stays as
the fallback.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Callable

import redis

from services.errors import VislexError
from services.serving.registry import MAPPING_PAIRS_KEY, MAPPINGS_CHANNEL, MAPPINGS_KEY_PREFIX, load_mapping_file

log = logging.getLogger(__name__)

# States of a job's mapping on this replica, as the job view reports them.
INSTALLED, INSTALLING, SUPERSEDED, FAILED, NOT_SERVED = "installed", "installing", "superseded", "failed", "not_served"


class VersionPush:
    """Subscribe to published mapping versions and install each on ``registry`` as soon as it arrives."""

    def __init__(self, registry: Any, client: redis.Redis, *, load_mapping: Callable[[str], Any] = load_mapping_file,
                 poll_s: float = 0.2, reconnect_s: float = 0.5):
        self.registry = registry
        self.redis = client
        self.load_mapping = load_mapping
        self.poll_s = poll_s
        self.reconnect_s = reconnect_s
        self._queue: queue.Queue[tuple[str, str, str, str]] = queue.Queue()
        self._failed: dict[tuple[str, str], str] = {}  # pair -> version whose file could not be installed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The registry answers 503 'installing' (not 404) for a pair listed here; shared with it.
        if not hasattr(registry, "installing"):
            registry.installing = {}
        self.installing: dict[tuple[str, str], str] = registry.installing

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "VersionPush":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vislex-version-push", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- what a job view asks -------------------------------------------------------------------------
    def served_version(self, src: str, tgt: str) -> str | None:
        try:
            return self.registry.mapping_version(src, tgt)
        except VislexError:  # not served (404) or being installed (503)
            return None

    def state(self, src: str, tgt: str, version: str, path: str | None = None) -> str:
        """Where a succeeded job's mapping stands here; an uninstalled published version is queued now."""
        if src not in self.registry.spaces or tgt not in self.registry.spaces:
            return NOT_SERVED
        if self.served_version(src, tgt) == version:
            return INSTALLED
        if self.installing.get((src, tgt)) == version:
            return INSTALLING
        if self._failed.get((src, tgt)) == version:
            return FAILED
        published = self._published(src, tgt)
        if published is None or published.get("version") != version:
            return SUPERSEDED  # a later job published another version of the pair
        # Published but not seen here yet (the message is on its way): install it now rather than wait for it.
        self.expect(src, tgt, version, str(published.get("path") or path))
        return INSTALLING

    def expect(self, src: str, tgt: str, version: str, path: str) -> None:
        """Mark src-tgt as installing ``version`` (503, not 404, meanwhile) and queue its installation."""
        with self._lock:
            if self.installing.get((src, tgt)) == version:
                return
            self.installing[(src, tgt)] = version
        self._queue.put((src, tgt, version, path))

    # ---- the thread -------------------------------------------------------------------------------------
    def _published(self, src: str, tgt: str) -> dict[str, Any] | None:
        raw = self.redis.get(f"{MAPPINGS_KEY_PREFIX}{src}-{tgt}")
        try:
            return json.loads(raw) if raw is not None else None
        except ValueError:
            return None

    def _on_message(self, data: bytes | str) -> None:
        try:
            info = json.loads(data)
            src, tgt = str(info["pair"]).split("-", 1)
            version, path = str(info["version"]), str(info["path"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed mapping message", extra={"data": str(data)[:200]})
            return
        if src in self.registry.spaces and tgt in self.registry.spaces:
            self.expect(src, tgt, version, path)

    def catch_up(self) -> int:
        """Queue every published version not served here (after a (re)subscribe: messages may have been missed)."""
        names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in self.redis.smembers(MAPPING_PAIRS_KEY))
        names = [n for n in names if n.count("-") == 1]
        if not names:
            return 0
        queued = 0
        for name, raw in zip(names, self.redis.mget([MAPPINGS_KEY_PREFIX + n for n in names])):
            src, tgt = name.split("-")
            if raw is None or src not in self.registry.spaces or tgt not in self.registry.spaces:
                continue
            try:
                info = json.loads(raw)
                version, path = str(info["version"]), str(info["path"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.served_version(src, tgt) != version and self._failed.get((src, tgt)) != version:
                self.expect(src, tgt, version, path)
                queued += 1
        return queued

    def install_pending(self) -> int:
        """Install every queued version (newest per pair wins); returns how many were installed."""
        installed = 0
        while True:
            try:
                src, tgt, version, path = self._queue.get_nowait()
            except queue.Empty:
                return installed
            if self.installing.get((src, tgt)) != version:
                continue  # a newer version was queued meanwhile
            installed += self._install(src, tgt, version, path)

    def _install(self, src: str, tgt: str, version: str, path: str) -> int:
        start = time.perf_counter()
        done = 0
        try:
            if self.served_version(src, tgt) != version:
                # Tell the polling fallback this version is handled here, so it does not install it a second time.
                getattr(self.registry, "_published", {})[f"{src}-{tgt}"] = version
                mapping = self.load_mapping(path)
                # Served for NN at once; CSLS r_S right after (a CSLS request meanwhile waits for it, no 404).
                self.registry.install_mapping(src, tgt, mapping, compute_csls=False)
                done = 1
        except Exception:
            self._failed[(src, tgt)] = version
            log.exception("cannot install pushed mapping", extra={"pair": f"{src}-{tgt}", "version": version})
        finally:
            with self._lock:
                if self.installing.get((src, tgt)) == version:
                    del self.installing[(src, tgt)]
        if done:
            log.info("pushed mapping installed", extra={"pair": f"{src}-{tgt}", "version": version,
                                                        "seconds": round(time.perf_counter() - start, 3)})
            try:
                self.registry.ensure_csls(src, tgt)
            except Exception:  # NN keeps serving; a CSLS request retries r_S itself
                log.exception("CSLS for a pushed mapping failed", extra={"pair": f"{src}-{tgt}"})
        return done

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(MAPPINGS_CHANNEL)
                    self.catch_up()
                message = pubsub.get_message(timeout=self.poll_s)
                if message is not None and message.get("type") == "message":
                    self._on_message(message["data"])
                self.install_pending()
            except redis.RedisError:
                log.warning("mapping push lost Redis; resubscribing", exc_info=True)
                pubsub = _close(pubsub)
                self.install_pending()  # versions already queued need no Redis
                self._stop.wait(self.reconnect_s)
            except Exception:  # the thread must survive anything an installation does
                log.exception("mapping push iteration failed")
                self._stop.wait(self.reconnect_s)
        _close(pubsub)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            pass
    return None
