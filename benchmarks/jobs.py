"""Job overhead: submit latency, submit-to-start latency, status-poll latency, cached resubmission.

Starts a real embedded Redis and one real Celery worker (``vislex worker``, prefork,
concurrency 1), and the API in-process (FastAPI TestClient, lifespan included). The alignment work
itself is made negligible (Procrustes on two synthetic 2,000 x 64 spaces with a 200-pair seed
dictionary) so the numbers measure the job machinery, not the numerics; ../shared/data is not
needed. Each job gets a distinct dictionary, hence a distinct content address.

    .venv/bin/python benchmarks/jobs.py [--jobs 20] [--polls 500]

Prints a table; writes benchmarks/results/jobs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT  # noqa: E402  (sets sys.path)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(values, 50) * 1000, 2), "p99_ms": round(_pct(values, 99) * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2), "n": len(values)}


def _write_space(directory: Path, name: str, words: list[str], X: np.ndarray) -> Path:
    path = directory / f"{name}.npy"
    np.save(path, X.astype(np.float32))
    (directory / f"{name}.vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--polls", type=int, default=500)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from services.infra.redis import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="vislex-bench-jobs-"))
    rng = np.random.default_rng(0)
    n, d = 2000, 64
    en = rng.standard_normal((n, d)).astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    fr = en @ q + 0.01 * rng.standard_normal((n, d))
    en_path = _write_space(tmp, "en", [f"w{i}" for i in range(n)], en)
    fr_path = _write_space(tmp, "fr", [f"m{i}" for i in range(n)], fr)

    redis = EmbeddedRedis(tmp / "redis")
    url = redis.start()
    env = {**os.environ, "VISLEX_REDIS_URL": url, "VISLEX_DATA_DIR": str(tmp / "data"),
           "VISLEX_WORKER_QUEUES": "light,heavy", "VISLEX_WORKER_CONCURRENCY": "1",
           "VISLEX_JOB_HEARTBEAT_S": "1", "VISLEX_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "vislex.cli", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results: dict = {"device": "cpu", "vocab": n, "dim": d, "jobs": args.jobs}
    try:
        settings = Settings(data_dir=tmp / "data", redis_url=url, encoder_languages=[], encoder_languages_lazy=[], clip_pretrained=None,
                            log_json=False, log_level="warning", job_heartbeat_s=1.0,
                            spaces={"en": str(en_path), "fr": str(fr_path)})
        with TestClient(create_app(settings, background_load=False)) as client:
            def body(k: int) -> dict:
                pairs = [[f"w{i}", f"m{i}"] for i in range(k, k + 200)]
                return {"src": "en", "tgt": "fr", "method": "procrustes", "seed": "dictionary", "dictionary": pairs}

            def wait(job_id: str) -> dict:
                while True:
                    view = client.get(f"/v1/alignments/{job_id}").json()
                    if view["state"] in ("succeeded", "failed", "cancelled"):
                        return view
                    time.sleep(0.005)

            # warm-up: the worker's first job imports numerics and loads both spaces (cached per process)
            t0 = time.perf_counter()
            first = wait(client.post("/v1/alignments", json=body(n - 300)).json()["id"])
            results["first_job_wall_s"] = round(time.perf_counter() - t0, 3)
            assert first["state"] == "succeeded", first

            submit, to_start, end_to_end, overhead = [], [], [], []
            for k in range(1, args.jobs + 1):
                t = time.perf_counter()
                r = client.post("/v1/alignments", json=body(k))
                submit.append(time.perf_counter() - t)
                assert r.status_code == 202, r.text
                view = wait(r.json()["id"])
                assert view["state"] == "succeeded", view
                to_start.append(view["started_at"] - view["created_at"])
                end_to_end.append(view["finished_at"] - view["created_at"])
                overhead.append(view["finished_at"] - view["created_at"] - view["result"]["align_seconds"])
            job_id = r.json()["id"]

            polls = []
            for _ in range(args.polls):
                t = time.perf_counter()
                client.get(f"/v1/alignments/{job_id}")
                polls.append(time.perf_counter() - t)
            cached = []
            for k in range(1, min(args.jobs, 50) + 1):
                t = time.perf_counter()
                r = client.post("/v1/alignments", json=body(k))
                cached.append(time.perf_counter() - t)
                assert r.status_code == 200 and r.json()["cached"]
            listing = []
            for _ in range(50):
                t = time.perf_counter()
                client.get("/v1/alignments", params={"limit": 50})
                listing.append(time.perf_counter() - t)
        results.update({
            "submit (POST, new job)": _ms(submit), "submit-to-start (queue+claim)": _ms(to_start),
            "submit-to-finish": _ms(end_to_end), "job overhead (finish - align time)": _ms(overhead),
            "status poll (GET job)": _ms(polls), "cached resubmission (POST)": _ms(cached),
            "list 50 jobs (GET)": _ms(listing),
        })
    finally:
        try:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(worker.pid, signal.SIGKILL)
        redis.stop()

    print(f"job overhead (1 worker, {args.jobs} jobs; {n}x{d} synthetic spaces; first job {results['first_job_wall_s']} s)")
    print(f"{'measure':40s} {'p50 ms':>9s} {'p99 ms':>9s} {'mean ms':>9s} {'n':>5s}")
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"{name:40s} {row['p50_ms']:9.2f} {row['p99_ms']:9.2f} {row['mean_ms']:9.2f} {row['n']:5d}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jobs.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'jobs.json'}")


if __name__ == "__main__":
    main()
