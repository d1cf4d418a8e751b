"""The alignment engine's CUDA paths against its CPU paths, on synthetic spaces (issue 18, "GPU when present").

Needs only torch and numpy (no ../shared, no FAISS): a source space of N unit rows, the target a rotation of it
plus noise, seeds = the first rows. Checks, on the device torch sees:

- mutual CSLS induction (``retrieval.mutual_nn``, torch backend: the fused sweeps) over the first 20k rows:
  the CUDA dictionary against the CPU one (pairs in common);
- InstaMap's shift (``instamap.anchor_shift``): CUDA against CPU, largest absolute difference;
- ``vecmap+instamap`` end to end at N words on CUDA (seconds), and the share of the planted pairs it recovers.

    python benchmarks/gpu_paths.py [--size 50000] [--out DIR]

Prints a table and writes ``gpu_paths.json`` (to --out, default benchmarks/results). Without CUDA it says so
and measures the CPU paths only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def planted_world(n: int, d: int = 300, noise: float = 0.08, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Low-rank structure + noise, so neighbourhoods are not uniform (as in real embeddings).
    X = _unit(rng.standard_normal((n, 40)) @ rng.standard_normal((40, d)) + 0.6 * rng.standard_normal((n, d)))
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Y = _unit(X @ R + noise * rng.standard_normal((n, d)))
    return X, Y


def timed(fn, *args, **kw):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    import torch

    from services.alignment.instamap import anchor_shift
    from services.alignment.registry import align
    from services.alignment.retrieval import mutual_nn
    from services.alignment.vectors import WordVectors

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=50000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "none (CPU paths only)"
    print(f"CUDA device: {device}", flush=True)
    X, Y = planted_world(args.size)
    rows = []
    head, small = min(20000, args.size), min(5000, args.size)
    # Equality on 5k rows (numpy's plain CSLS is the slow reference), CUDA's time on 20k.
    cpu_pairs, t_cpu = timed(mutual_nn, X[:small], Y[:small], retrieval="csls", backend="numpy")
    rows.append({"check": f"mutual CSLS {small}x{small}", "path": "cpu (numpy)", "seconds": round(t_cpu, 2),
                 "result": f"{len(cpu_pairs[0])} pairs"})
    if cuda:
        gpu_pairs, t_gpu = timed(mutual_nn, X[:small], Y[:small], retrieval="csls", backend="torch")
        common = len({tuple(p) for p in cpu_pairs[0]} & {tuple(p) for p in gpu_pairs[0]})
        rows.append({"check": f"mutual CSLS {small}x{small}", "path": "cuda (fused sweeps)",
                     "seconds": round(t_gpu, 2), "result": f"{len(gpu_pairs[0])} pairs, {common} in common with CPU"})
        gpu_pairs, t_gpu = timed(mutual_nn, X[:head], Y[:head], retrieval="csls", backend="torch")
        rows.append({"check": f"mutual CSLS {head}x{head}", "path": "cuda (fused sweeps)",
                     "seconds": round(t_gpu, 2), "result": f"{len(gpu_pairs[0])} pairs"})
    rng = np.random.default_rng(1)
    seeds = rng.choice(head, min(8000, head // 2), replace=False)
    anchors, deltas = X[seeds], (Y[seeds] - X[seeds]).astype(np.float32)
    shift_cpu, t_cpu = timed(anchor_shift, X[:head], anchors, deltas, 70, device="cpu")
    rows.append({"check": f"InstaMap shift {head} rows, {len(seeds)} anchors", "path": "cpu", "seconds": round(t_cpu, 2),
                 "result": ""})
    if cuda:
        shift_gpu, t_gpu = timed(anchor_shift, X[:head], anchors, deltas, 70, device="cuda")
        rows.append({"check": f"InstaMap shift {head} rows, {len(seeds)} anchors", "path": "cuda", "seconds": round(t_gpu, 2),
                     "result": f"max |cuda - cpu| = {float(np.abs(shift_gpu - shift_cpu).max()):.2e}"})
    words = [f"w{i}" for i in range(args.size)]
    src, tgt = WordVectors(words, X), WordVectors(words, Y)
    n_seeds = min(5000, args.size // 4)
    seed_pairs = np.stack([np.arange(n_seeds), np.arange(n_seeds)], axis=1)
    result, t_align = timed(align, src, tgt, "vecmap+instamap", seed_pairs=seed_pairs)
    pairs = result.dictionary[0]
    right = float(np.mean(pairs[:, 0] == pairs[:, 1])) if len(pairs) else 0.0
    rows.append({"check": f"vecmap+instamap {args.size}x{args.size}", "path": "cuda" if cuda else "cpu",
                 "seconds": round(t_align, 2), "result": f"{len(pairs)} dictionary pairs, {100 * right:.1f} % planted"})
    width = max(len(r["check"]) for r in rows)
    for r in rows:
        print(f"{r['check']:<{width}}  {r['path']:<20} {r['seconds']:>8.2f} s  {r['result']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_paths.json").write_text(json.dumps({"device": device, "size": args.size, "rows": rows}, indent=2))
    print(f"wrote {out / 'gpu_paths.json'}")


if __name__ == "__main__":
    main()
