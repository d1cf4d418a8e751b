"""Serving with many languages for benchmarks/scale.py: req/s and p50 at concurrency 64 with 2, 6 and 14 loaded.

Reuses benchmarks/serve.py (embedded Redis, ``vislex``'s uvicorn app with VISLEX_* settings, the raw HTTP/1.1
load generator). Languages l0 … l13 are served from ``.npy`` files: l0 is the prepared English space (its
first ``size`` words), every other language a randomly rotated, slightly noisy copy under its own words,
mapped from l0 by its own saved linear mapping (a hub: l0→lk), tables built eagerly. Requests are single-word
``GET /v1/translate`` (CSLS, k = 5) of random l0 words into random target languages.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np


def _write_languages(tmp: Path, base_npy: Path, size: int, n_langs: int) -> tuple[dict, dict, list[str]]:
    from services.alignment.mapping import LinearStage, Mapping
    from services.alignment.vectors import WordVectors, load_vectors, save_vectors

    base = load_vectors(base_npy, max_vocab=size)
    rng = np.random.default_rng(0)
    spaces, mappings = {}, {}
    for k in range(n_langs):
        if k == 0:
            vectors, words = base.vectors, base.words
        else:
            Q, _ = np.linalg.qr(rng.standard_normal((base.dim, base.dim)))
            vectors = base.vectors @ Q.T + 0.01 * rng.standard_normal(base.vectors.shape)
            words = [f"{w}{k}" for w in base.words]
            mapping_path = tmp / f"l0-l{k}.npz"
            Mapping("linear", [LinearStage(Q.T)]).save(mapping_path)
            mappings[f"l0-l{k}"] = str(mapping_path)
        path = tmp / f"l{k}.npy"
        save_vectors(path, WordVectors(list(words), np.asarray(vectors, np.float16)))
        spaces[f"l{k}"] = str(path)
    return spaces, mappings, list(base.words)


def _wait_tables(base: str, n_pairs: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        spaces = httpx.get(base + "/v1/spaces", timeout=30).json()["spaces"]
        hub = next(s for s in spaces if s["lang"] == "l0")
        done = sum(1 for m in hub["mappings"] if set(m["tables"]) == {"nn", "csls"})
        if done >= n_pairs:
            return time.monotonic() - start
        time.sleep(1.0)
    raise RuntimeError(f"tables of {n_pairs} pairs not built in {timeout:.0f} s")


def measure_serving(base_npy: Path, size: int, language_counts=(2, 6, 14), *, requests: int = 12000,
                    seconds: float = 15.0, dtype: str = "float32") -> list[dict]:
    """One server per language count; rows of req/s, p50/p99 (ms), server RSS and its start-to-tables time."""
    from common import stop_process
    from serve import drive, server_rss, start_redis, start_server, wait_ready

    from services.infra.redis import free_port

    rows = []
    with tempfile.TemporaryDirectory(prefix="vislex-scale-serve-") as tmpdir:
        tmp = Path(tmpdir)
        spaces_all, mappings_all, words = _write_languages(tmp, base_npy, size, max(language_counts))
        redis = start_redis(tmp)
        try:
            for n_langs in language_counts:
                spaces = {f"l{k}": spaces_all[f"l{k}"] for k in range(n_langs)}
                mappings = {f"l0-l{k}": mappings_all[f"l0-l{k}"] for k in range(1, n_langs)}
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                started = time.monotonic()
                proc = start_server(tmp / f"run{n_langs}", redis.url, None, cache=False, table_k=10,
                                    index_type="flat", workers=1, port=port, spaces=spaces, mappings=mappings,
                                    extra_env={"VISLEX_STORAGE_DTYPE": dtype})
                try:
                    wait_ready(base, proc, tables=False, timeout=900)
                    _wait_tables(base, len(mappings), timeout=1800)
                    ready_s = time.monotonic() - started
                    rng = random.Random(n_langs)
                    targets = [f"l{k}" for k in range(1, n_langs)]

                    def single(i, rng=rng, targets=targets):
                        query = urlencode({"word": words[rng.randrange(len(words))], "src": "l0",
                                           "tgt": targets[rng.randrange(len(targets))], "k": 5, "retrieval": "csls"})
                        return "GET", f"/v1/translate?{query}", None, 1

                    asyncio.run(drive(base, 64, single, max_requests=max(200, requests // 10), max_seconds=3))  # warm
                    res = asyncio.run(drive(base, 64, single, max_requests=requests, max_seconds=seconds))
                    res.update(languages=n_langs, pairs=len(mappings), size=size, dtype=dtype,
                               ready_s=round(ready_s, 1), rss_mib=round(server_rss(proc) / 2**20))
                    rows.append(res)
                    print(f"  serving {n_langs} languages ({len(mappings)} pairs, {size} words, {dtype}): "
                          f"{res['req_per_s']:.0f} req/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, "
                          f"errors {res['errors']}, RSS {res['rss_mib']} MiB, ready+tables {ready_s:.0f} s", flush=True)
                finally:
                    stop_process(proc)
        finally:
            redis.stop()
    return rows
