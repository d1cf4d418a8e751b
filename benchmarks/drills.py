"""Fault drills against a real ``vislex serve`` on loopback (issue 19): nothing may be lost.

Topology (the documented scaled one): a real redis-server the drills control (SIGKILL, SIGSTOP,
restart on the same port and AOF directory), ``vislex serve`` with ``VISLEX_REDIS_URL`` (the API) and
``vislex worker`` processes, on planted en/fr spaces (same words, a known rotation) with an en-fr
mapping and eager translation tables. Drills, each bounded in time:

1. worker SIGKILL mid-job   -- a second worker takes the job over; it must succeed.
2. Redis SIGSTOP (3 s)      -- requests get a quick 503 naming redis; everything answers again after.
3. Redis SIGKILL + restart  -- 503 while down; after the restart every job submitted is still there.
4. API restart              -- SIGTERM + start again: every job and the served mapping are back.
5. 64-client load           -- keep-alive GETs of table hits: no error status at all.
6. 1,000-connection overload -- statuses are 200 or 429 only; /healthz and /readyz on the probe port
                               (VISLEX_PROBE_PORT, own thread; a fresh connection each) answer 200 in < 1 s.
                               The API port's /healthz is timed too, for comparison only (it waits
                               behind the event loop with every other request).

Prints a table (what was lost, time to a final state, statuses seen) and writes
benchmarks/results/drills.json.

    .venv/bin/python benchmarks/drills.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import ROOT, print_table, write_results  # noqa: E402  (sets sys.path)

from services.infra.redis import EmbeddedRedis, die_with_parent, free_port

WORDS, DIM = 3000, 64
JOB = {"src": "en", "tgt": "fr", "method": "walip", "seed": "identical"}


# ---- processes -----------------------------------------------------------------------------------------
def planted(tmp: Path) -> dict[str, str]:
    from services.alignment.mapping import Mapping

    rng = np.random.default_rng(0)
    en = rng.standard_normal((WORDS, DIM)).astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    fr = (en @ q + 0.05 * rng.standard_normal((WORDS, DIM))).astype(np.float32)
    words = [f"w{i}" for i in range(WORDS)]
    paths = {}
    for lang, X in (("en", en), ("fr", fr)):
        np.save(tmp / f"{lang}.npy", X)
        (tmp / f"{lang}.vocab.txt").write_text("\n".join(words) + "\n")
        paths[lang] = str(tmp / f"{lang}.npy")
    Mapping.identity(DIM).save(tmp / "en-fr.npz")
    return paths


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.probe_port = free_port()
        self.probe_base = f"http://127.0.0.1:{self.probe_port}"
        spaces = planted(tmp)
        self.env = {**os.environ, "VISLEX_DATA_DIR": str(tmp / "data"), "VISLEX_SPACES": json.dumps(spaces),
                    "VISLEX_MAPPINGS": json.dumps({"en-fr": str(tmp / "en-fr.npz")}),
                    "VISLEX_ENCODER_LANGUAGES": "[]", "VISLEX_ENCODER_LANGUAGES_LAZY": "[]",
                    "VISLEX_CLIP_PRETRAINED": "", "VISLEX_LOG_LEVEL": "warning",
                    "VISLEX_TABLE_BUILD": "eager", "VISLEX_JOB_HEARTBEAT_S": "1", "VISLEX_PORT": str(self.port),
                    "VISLEX_PROBE_PORT": str(self.probe_port),
                    "PYTHONPATH": str(ROOT)}
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def start_redis(self) -> None:
        self.redis = EmbeddedRedis(self.tmp / "redis", port=self.redis.port)
        self.env["VISLEX_REDIS_URL"] = self.redis.start()

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.tmp / log, "ab")
        return subprocess.Popen([sys.executable, "-m", "vislex.cli", *args], cwd=ROOT, env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def start_api(self, timeout: float = 120) -> float:
        start = time.monotonic()
        self.api = self._spawn("serve", log="api.log")
        while time.monotonic() - start < timeout:
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"API not ready; see {self.tmp / 'api.log'}")

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(signal.SIGTERM)
            self.api.wait(30)

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn("worker", log="worker.log")
        self.workers.append(worker)
        return worker

    @staticmethod
    def kill_group(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def close(self) -> None:
        for w in self.workers:
            self.kill_group(w)
        if self.api is not None and self.api.poll() is None:
            self.kill_group(self.api)
        if self.redis.process is not None and self.redis.process.poll() is None:
            os.kill(self.redis.process.pid, signal.SIGCONT)
        self.redis.stop()


# ---- helpers --------------------------------------------------------------------------------------------
_SUBMITTED = collections.Counter()


def submit(c: Cluster, tag: str) -> str:
    """A new job each call: its evaluation pairs make its content address unique."""
    _SUBMITTED[tag] += 1
    n = len(_SUBMITTED) * 100 + _SUBMITTED[tag]
    r = httpx.post(c.base + "/v1/alignments", json={**JOB, "evaluate_with": [[f"w{n}", f"w{n}"]]}, timeout=10)
    if r.status_code not in (200, 202):
        raise RuntimeError(f"submit: {r.status_code} {r.text}")
    return r.json()["id"]


def job_ids(c: Cluster) -> set[str]:
    r = httpx.get(c.base + "/v1/alignments", params={"limit": 500}, timeout=10)
    return {j["id"] for j in r.json()["jobs"]}


def wait_state(c: Cluster, job_id: str, states: set[str], timeout: float, seen: collections.Counter) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{c.base}/v1/alignments/{job_id}", timeout=5)
            seen[r.status_code] += 1
            if r.status_code == 200 and r.json()["state"] in states:
                return r.json()
        except httpx.TransportError:
            seen["conn"] += 1
        time.sleep(0.1)
    return {"state": "timeout"}


def poll_while(c: Cluster, path: str, seconds: float, seen: collections.Counter) -> list[float]:
    """GET path repeatedly for ``seconds``; statuses into ``seen``; latencies (s) returned."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            r = httpx.get(c.base + path, timeout=10)
            seen[r.status_code] += 1
            if r.status_code == 503:
                seen["503:" + r.json()["error"]["code"]] += 1
        except httpx.TransportError:
            seen["conn"] += 1
        latencies.append(time.perf_counter() - t)
        time.sleep(0.05)
    return latencies


def row(name: str, lost: int, final_s: float | None, seen: collections.Counter, ok: bool, note: str = "") -> dict:
    return {"drill": name, "lost": lost, "final_s": None if final_s is None else round(final_s, 2),
            "statuses": " ".join(f"{k}x{v}" for k, v in sorted(seen.items(), key=str)), "ok": "yes" if ok else "NO",
            "note": note}


# ---- drills -------------------------------------------------------------------------------------------------
def drill_worker_kill(c: Cluster) -> dict:
    seen: collections.Counter = collections.Counter()
    worker = c.workers[0]
    job = submit(c, "kill")
    running = wait_state(c, job, {"running", "succeeded", "failed"}, 60, seen)
    t0 = time.monotonic()
    killed = running["state"] == "running"
    if killed:
        c.kill_group(worker)
        c.workers.remove(worker)
        c.start_worker()  # the replacement machine
    done = wait_state(c, job, {"succeeded", "failed", "cancelled"}, 240, seen)
    ok = done["state"] == "succeeded"
    lost = int(job not in job_ids(c))
    return row("worker SIGKILL mid-job", lost, time.monotonic() - t0 if ok else None, seen, ok and killed,
               (f"final {done['state']}, attempt {done.get('attempt')}, retries {done.get('retries')}"
                if killed else "job ended before the kill"))


def drill_redis_stop(c: Cluster) -> dict:
    seen: collections.Counter = collections.Counter()
    before = job_ids(c)
    os.kill(c.redis.process.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        lat = poll_while(c, "/v1/alignments", 3.0, seen)
        ready = httpx.get(c.base + "/readyz", timeout=10).status_code
        seen[f"readyz:{ready}"] += 1
    finally:
        os.kill(c.redis.process.pid, signal.SIGCONT)
    back = _recover(c, seen)
    lost = len(before - job_ids(c))
    ok = lost == 0 and back is not None and max(lat) < 3.0 and not (set(seen) & {500, "conn"})
    return row("Redis SIGSTOP 3 s", lost, back and back - t0, seen, ok, f"slowest answer while paused {max(lat):.2f} s")


def drill_redis_kill(c: Cluster) -> dict:
    seen: collections.Counter = collections.Counter()
    submitted = {submit(c, f"redis-kill-{i}") for i in range(3)}
    time.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk
    before = job_ids(c)
    os.kill(c.redis.process.pid, signal.SIGKILL)
    c.redis.process.wait(10)
    t0 = time.monotonic()
    poll_while(c, "/v1/alignments", 2.0, seen)
    c.start_redis()
    back = _recover(c, seen)
    lost = len((before | submitted) - job_ids(c))
    ok = lost == 0 and back is not None and not (set(seen) & {500, "conn"})
    return row("Redis SIGKILL + restart", lost, back and back - t0, seen, ok, "503 redis_unavailable while down")


def _recover(c: Cluster, seen: collections.Counter, timeout: float = 30) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(c.base + "/v1/alignments", timeout=5)
            seen[r.status_code] += 1
            if r.status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            seen["conn"] += 1
        time.sleep(0.1)
    return None


def drill_api_restart(c: Cluster) -> dict:
    seen: collections.Counter = collections.Counter()
    before = job_ids(c)
    version = httpx.get(c.base + "/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr"}).json()
    t0 = time.monotonic()
    c.stop_api()
    c.start_api()
    after = job_ids(c)
    t = httpx.get(c.base + "/v1/translate", params={"word": "w1", "src": "en", "tgt": "fr"}, timeout=30)
    seen[t.status_code] += 1
    same = t.status_code == 200 and t.json()["mapping_version"] == version["mapping_version"]
    lost = len(before - after)
    return row("API restart", lost, time.monotonic() - t0, seen, lost == 0 and same,
               f"{len(after)} jobs back; served mapping {'unchanged' if same else 'CHANGED'}")


async def _flood(c: Cluster, connections: int, seconds: float, seen: collections.Counter) -> list[float]:
    from serve import RawHttpConnection

    latencies: list[float] = []
    end = time.perf_counter() + seconds
    host, port = "127.0.0.1", c.port

    async def client(i: int) -> None:
        conn = RawHttpConnection(host, port)
        try:
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    status, _ = await conn.request("GET", f"/v1/translate?word=w{i % WORDS}&src=en&tgt=fr&k=5")
                except (OSError, asyncio.IncompleteReadError):
                    seen["conn"] += 1
                    conn = RawHttpConnection(host, port)
                    await asyncio.sleep(0.05)
                    continue
                seen[status] += 1
                latencies.append(time.perf_counter() - t)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(connections)))
    return latencies


def drill_load(c: Cluster, seconds: float) -> dict:
    seen: collections.Counter = collections.Counter()
    lat = asyncio.run(_flood(c, 64, seconds, seen))
    bad = {k: v for k, v in seen.items() if k != 200}
    return row("64-client load", 0, None, seen, not bad,
               f"{len(lat) / seconds:.0f} req/s, p50 {np.percentile(lat, 50) * 1e3:.1f} ms, "
               f"p99 {np.percentile(lat, 99) * 1e3:.1f} ms")


def _flood_child(port: int, connections: int, seconds: float, out) -> None:
    c = Cluster.__new__(Cluster)
    c.port = port
    seen: collections.Counter = collections.Counter()
    lat = asyncio.run(_flood(c, connections, seconds, seen))
    out.send((dict(seen), [float(np.percentile(lat, q)) for q in (50, 99)] if lat else [0.0, 0.0]))


def _api_port_healthz(c: Cluster, stop: threading.Event, out: list[float]) -> None:
    """For comparison: /healthz on the API port, a fresh connection each (not required to be fast)."""
    while not stop.is_set():
        t = time.perf_counter()
        try:
            httpx.get(c.base + "/healthz", timeout=15)
            out.append(time.perf_counter() - t)
        except httpx.TransportError:
            out.append(float("inf"))
        stop.wait(0.2)


def drill_overload(c: Cluster, seconds: float) -> dict:
    """1,000 connections from a child process; the probes from this one, on the probe port (VISLEX_PROBE_PORT),
    one at a time, each on a fresh connection (as a Kubernetes/compose probe does): 200 in < 1 s."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    flood = ctx.Process(target=_flood_child, args=(c.port, 1000, seconds, child))
    flood.start()
    seen: collections.Counter = collections.Counter()
    probes: dict[str, list[float]] = {}
    time.sleep(min(1.0, seconds / 3))  # let the flood build up
    end = time.monotonic() + seconds * 0.6
    api_port: list[float] = []
    stop = threading.Event()
    compare = threading.Thread(target=_api_port_healthz, args=(c, stop, api_port), daemon=True)
    compare.start()
    while time.monotonic() < end:
        for path in ("/healthz", "/readyz"):
            t = time.perf_counter()
            try:
                status = httpx.get(c.probe_base + path, timeout=15).status_code
            except httpx.TransportError:
                status = "conn"
            probes.setdefault(path, []).append(time.perf_counter() - t)
            seen[f"probe{path}:{status}"] += 1
        time.sleep(0.2)
    stop.set()
    flood_seen, (p50, p99) = parent.recv()
    flood.join(30)
    compare.join(20)
    seen.update(flood_seen)
    translate = {k for k in seen if isinstance(k, int)}
    worst = {p: max(v) for p, v in probes.items()}
    ok = translate <= {200, 429} and all(k.endswith(":200") for k in seen if isinstance(k, str) and ":" in k) \
        and max(worst.values(), default=9) < 1.0
    n = sum(len(v) for v in probes.values())
    return row("1,000-connection overload", 0, None, seen, ok,
               f"translate p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms (client in the same 2 cores); "
               f"probe port ({n} probes, fresh connections): slowest "
               + ", ".join(f"{p} {v * 1e3:.0f} ms" for p, v in worst.items())
               + (f"; API port /healthz (comparison, {len(api_port)}): slowest {max(api_port):.2f} s"
                  if api_port else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter load drills")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else 6.0
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vislex-drills-") as tmpdir:
        c = Cluster(Path(tmpdir))
        try:
            c.start_redis()
            ready = c.start_api()
            print(f"API ready in {ready:.1f} s on {c.base}")
            c.start_worker()
            for drill in (drill_worker_kill, drill_redis_stop, drill_redis_kill, drill_api_restart,
                          lambda c: drill_load(c, seconds), lambda c: drill_overload(c, seconds)):
                rows.append(drill(c))
                print(json.dumps(rows[-1]))
        finally:
            c.close()
    print()
    print_table(rows, [("drill", "drill", ""), ("lost", "lost", "d"), ("final_s", "to final s", ".2f"),
                       ("ok", "ok", ""), ("statuses", "statuses seen", ""), ("note", "note", "")])
    write_results("drills", {"rows": rows, "seconds": round(time.monotonic() - started, 1)})
    if any(r["ok"] != "yes" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
