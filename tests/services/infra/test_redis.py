"""The embedded Redis is a real server: it persists across restarts and stops cleanly."""

from __future__ import annotations

import psutil
import pytest

from services.errors import Unavailable
from services.infra.redis import EmbeddedRedis, connect, ping


def test_embedded_redis_persists_across_restart(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        pid = server.process.pid
        connect(server.url).hset("vislex:test", mapping={"a": "1"})
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with EmbeddedRedis(tmp_path) as server:
        assert connect(server.url).hgetall("vislex:test") == {b"a": b"1"}
    assert (tmp_path / "redis.log").exists()


def test_stopped_server_no_longer_answers(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    assert ping(url)
    server.stop()
    assert not ping(url, timeout=0.2)


def test_start_failure_is_reported(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory must be")
    with pytest.raises((Unavailable, OSError)):
        EmbeddedRedis(tmp_path / "blocker").start(timeout=3)


def test_server_outlives_the_thread_that_started_it(tmp_path):
    """PR_SET_PDEATHSIG fires when the forking *thread* exits: a short-lived starter must not kill Redis."""
    import threading
    import time

    server = EmbeddedRedis(tmp_path)
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        time.sleep(0.5)  # the signal would be delivered at once when the starter thread exited
        assert server.running
        assert connect(server.url).ping()
    finally:
        pid = server.process.pid
        server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
