"""``vislex serve`` starts embedded Redis + worker + API, and leaves nothing behind on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from services.infra.redis import free_port


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_becomes_ready_and_stops_cleanly(tmp_path, planted_spaces, stop_signal):
    en, fr, *_ = planted_spaces
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VISLEX_REDIS_URL"}
    env.update(VISLEX_DATA_DIR=str(tmp_path / "data"), VISLEX_ENCODER_LANGUAGES="[]",
               VISLEX_CLIP_PRETRAINED="", VISLEX_LOG_JSON="false")
    proc = subprocess.Popen([sys.executable, "-m", "vislex.cli", "serve", "--space", f"en={en}",
                             "--space", f"fr={fr}", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
        system = httpx.get(f"http://127.0.0.1:{port}/v1/system", timeout=5).json()
        assert system["redis"]["reachable"] is True and system["redis"]["embedded"] is True
        assert system["workers"] == 1  # the one worker `vislex serve` starts
        children = _descendants(proc.pid)
        assert len(children) >= 2  # redis-server and the worker (plus its pool)
        assert (tmp_path / "data" / "redis").is_dir()
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "orphan processes left behind"
    assert proc.returncode in (0, -stop_signal, 128 + stop_signal)
