"""Cost curves (issue 18): time and peak memory of every stage at 20k, 50k, 100k and 200k words, fitted growth.

    .venv/bin/python benchmarks/scale.py [--quick] [--sizes 20000,50000,100000,200000] [--device auto|cpu|cuda]
        [--stages induction,l1,...] [--skip-serve] [--serve-size 20000] [--out PATH.json] [--instamap-check]

For each size N, en and fr spaces of N words: the real vectors of ../shared/data/vectors (50k words), beyond
that extended with synthetic rows that keep their statistics (benchmarks/scale_stages.py: donor row + Gaussian
noise with the real mean and covariance, the nearest-neighbour cosine of a real word, the donors' norms);
without the shared data, a clustered synthetic base (costs only). Stages (each in a fresh child process, so
its peak RSS is its own; on CUDA also its peak GPU memory): loading (.vec text, .npy), exact NN and CSLS
retrieval of the MUSE en-fr test set (1,500 words; CSLS needs r_S of every target: N × N), mutual-NN CSLS
induction over N × N (one exact sweep), procrustes, vecmap, vecmap+instamap (plus the reference engine and
the authors' code variant up to --reference-max-size), walip (identical-string seeds), l1 on vecmap's output,
a served pair's mapping + r_S + NN/CSLS tables, serving memory per language at float32 and float16 (and ten
languages of the largest size at float16), and, unless --skip-serve, a real server's req/s and p50 at
concurrency 64 with 2, 6 and 14 languages of --serve-size words (benchmarks/scale_serve.py).

Prints a table, fits log(time) = b log(N) + c per stage (b ≈ 1 linear, ≈ 2 quadratic), says how far each
quadratic stage's largest run is from the machine's measured GEMM rate (bound by GEMM, or by memory/Python),
and writes JSON (default benchmarks/results/scale.json) and a PNG plot beside it.
``--device cuda`` runs every stage on the GPU paths (torch CUDA; FAISS-GPU for serving indexes when installed);
``--instamap-check`` instead compares InstaMap's engines and variants on real en→fr and en→de (P@1, time, peak).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, SHARED_DATA, print_table

DEFAULT_SIZES = (20000, 50000, 100000, 200000)
QUICK_SIZES = (2000, 5000)
CORE_STAGES = ["load_vec", "load_npy", "nn_retrieval", "csls_retrieval", "induction", "procrustes", "vecmap",
               "vecmap+instamap", "walip", "l1", "serve_tables"]
REFERENCE_STAGES = ["vecmap+instamap (reference engine)", "vecmap+instamap (code variant)"]
QUADRATIC = {"csls_retrieval", "induction", "l1", "serve_tables", "vecmap+instamap (code variant)"}
RESULT_PREFIX = "SCALE_RESULT "


# ----------------------------------------------------------------------------- child process


def child_main(args) -> None:
    import psutil

    from scale_stages import STAGES, Ctx, Timer, peak_rss_mb

    import torch  # noqa: F401  (imported before the baseline: every stage uses it)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    import_mb = psutil.Process().memory_info().rss / 2**20
    ctx = Ctx(args.size, Path(args.work), args.device, json.loads(args.extra or "{}"))
    result = STAGES[args.child](ctx)
    result["peak_mb"] = peak_rss_mb()
    result["cpu_s"] = Timer.cpu_total  # CPU seconds of the timed blocks (all threads)
    result["load_avg_1m"] = os.getloadavg()[0]  # the machine's load when the stage ended (shared boxes)
    result["import_mb"] = import_mb
    if torch.cuda.is_available():
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(stage: str, size: int, work: Path, device: str, extra: dict | None = None, timeout: float = 3600) -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU paths even on a GPU machine
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--size", str(size), "--work", str(work),
           "--device", device, "--extra", json.dumps(extra or {})]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            out = json.loads(line[len(RESULT_PREFIX):])
            out["wall_s"] = time.perf_counter() - started
            return out
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


# ----------------------------------------------------------------------------- machine reference points


def machine_rates(device: str = "cpu") -> dict:
    """Measured float32 GEMM rate (numpy's BLAS, all threads) and copy bandwidth: what 'bound by' compares to."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((2048, 300), dtype=np.float32), rng.standard_normal((20000, 300), dtype=np.float32)
    out = np.empty((2048, 20000), np.float32)
    np.matmul(A, B.T, out=out)
    started = time.perf_counter()
    for _ in range(5):
        np.matmul(A, B.T, out=out)
    gflops = 5 * 2 * 2048 * 20000 * 300 / (time.perf_counter() - started) / 1e9
    src = np.ones(2**27, np.float32)  # 512 MB
    dst = np.empty_like(src)
    np.copyto(dst, src)
    started = time.perf_counter()
    for _ in range(3):
        np.copyto(dst, src)
    bandwidth = 3 * 2 * src.nbytes / (time.perf_counter() - started) / 1e9
    rates = {"cores": len(os.sched_getaffinity(0)), "gemm_gflops": round(gflops, 1), "copy_gb_s": round(bandwidth, 1)}
    if device in ("auto", "cuda"):
        rates.update(_gpu_rates())
    return rates


def _gpu_rates() -> dict:
    """float32 GEMM rate of the CUDA device (torch, TF32 off as in the stages), when there is one."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return {}
    if not torch.cuda.is_available():
        return {}
    a = torch.randn(8192, 300, device="cuda")
    b = torch.randn(65536, 300, device="cuda")
    a @ b.T
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b.T
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"gpu": torch.cuda.get_device_name(0), "gpu_gemm_gflops": round(10 * 2 * 8192 * 65536 * 300 / seconds / 1e9, 1)}


# ----------------------------------------------------------------------------- analysis


def growth(sizes: list[int], seconds: list[float]) -> float | None:
    pts = [(math.log(n), math.log(s)) for n, s in zip(sizes, seconds) if s and s > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def growth_label(b: float | None) -> str:
    if b is None:
        return ""
    if b < 0.5:
        return "flat (capped work)"
    if b < 1.3:
        return "linear"
    if b < 1.7:
        return "n log n .. n^1.5"
    return "quadratic"


def bound_by(row: dict, rates: dict) -> str:
    """Where a run's time goes: its model FLOPs against the measured GEMM rate."""
    flops = row.get("flops") or row.get("dictionary_flops")
    if not flops or not row.get("seconds"):
        return ""
    peak = rates.get("gpu_gemm_gflops") or rates["gemm_gflops"]
    share = flops / row["seconds"] / 1e9 / peak
    if share >= 0.5:
        return f"GEMM ({share:.0%} of peak)"
    return f"memory/Python ({share:.0%} of GEMM peak)"


def summarise(results: dict[str, dict[int, dict]], sizes: list[int], rates: dict) -> list[dict]:
    rows = []
    for stage, by_size in results.items():
        done = [n for n in sizes if n in by_size and "seconds" in by_size[n]]
        b = growth(done, [by_size[n]["seconds"] for n in done])
        row = {"stage": stage, "growth_exponent": None if b is None else round(b, 2), "growth": growth_label(b)}
        for n in sizes:
            r = by_size.get(n)
            if r is None:
                continue
            row[f"s_{n}"] = r.get("seconds")
            row[f"mb_{n}"] = r.get("peak_mb")
            if "gpu_peak_mb" in r:
                row[f"gpu_mb_{n}"] = r["gpu_peak_mb"]
            if "error" in r:
                row[f"error_{n}"] = r["error"]
        if 50000 in done and done and done[-1] > 50000:
            row["ratio_largest_to_50k"] = round(by_size[done[-1]]["seconds"] / by_size[50000]["seconds"], 2)
        if done:
            row["bound_at_largest"] = bound_by(by_size[done[-1]], rates)
        rows.append(row)
    return rows


def plot(results: dict, sizes: list[int], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[dev]'): no plot")
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
    for stage, by_size in results.items():
        ns = [n for n in sizes if n in by_size and by_size[n].get("seconds")]
        if len(ns) < 1:
            continue
        style = "--" if stage in QUADRATIC else "-"
        ax_t.plot(ns, [by_size[n]["seconds"] for n in ns], style, marker="o", label=stage)
        ax_m.plot(ns, [by_size[n]["peak_mb"] for n in ns], style, marker="o", label=stage)
    for ax, label in ((ax_t, "seconds"), (ax_m, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size (words per language)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_title(title)
    ax_m.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main


def run_scale(args) -> None:
    from scale_stages import prepare

    sizes = sorted(int(s) for s in args.sizes.split(",")) if args.sizes else list(QUICK_SIZES if args.quick
                                                                                     else DEFAULT_SIZES)
    stages = args.stages.split(",") if args.stages else CORE_STAGES + REFERENCE_STAGES
    out = Path(args.out) if args.out else RESULTS / ("scale-quick.json" if args.quick else "scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = SHARED_DATA if (SHARED_DATA / "vectors" / "en.npy").is_file() else None
    print(f"data: {data or 'no shared data here: clustered synthetic spaces (costs only, P@1 meaningless)'}")
    rates = machine_rates(args.device)
    print(f"machine: {rates}; device {args.device}", flush=True)
    results: dict[str, dict[int, dict]] = {s: {} for s in stages}
    with tempfile.TemporaryDirectory(prefix="vislex-scale-") as tmpdir:
        work = Path(tmpdir)
        started = time.perf_counter()
        info = prepare(work, max(sizes), data, write_vec="load_vec" in stages)
        print(f"prepared {max(sizes)}-word spaces in {time.perf_counter() - started:.0f} s: {info}", flush=True)
        for n in sizes:
            for stage in stages:
                if stage in REFERENCE_STAGES and n > args.reference_max_size:
                    continue
                extra = {"max_work": 2e10} if args.quick and stage == "l1" else None  # a smoke run's L1: ~2 s
                r = run_child(stage, n, work, args.device, extra, timeout=args.timeout)
                r = repeat_if_short(r, lambda: run_child(stage, n, work, args.device, extra, timeout=args.timeout))
                results[stage][n] = r
                show = (f"{r['seconds']:.2f} s, peak {r['peak_mb']:.0f} MB" if "seconds" in r else f"FAILED {r['error']}")
                counted = {k: v for k, v in r.items() if k not in ("seconds", "peak_mb", "import_mb", "wall_s", "flops")}
                print(f"{n:>7} {stage:<36} {show}  {json.dumps(counted, default=str)[:200]}", flush=True)
        memory = []
        if not args.skip_memory:
            for n in sizes:
                for dtype in ("float32", "float16"):
                    r = run_child("serve_memory", n, work, args.device, {"dtype": dtype, "languages": 2}, args.timeout)
                    memory.append({"size": n, **r})
                    print(f"{n:>7} serve_memory {dtype}: {r.get('rss_per_language_mb', float('nan')):.0f} MB/language "
                          f"(arrays {r.get('array_bytes_mb', float('nan')) / 2:.0f} MB)", flush=True)
            ten = run_child("serve_memory", max(sizes), work, args.device, {"dtype": "float16", "languages": 10},
                            args.timeout)
            memory.append({"size": max(sizes), "ten_languages": True, **ten})
            print(f"ten {max(sizes)}-word languages at float16: RSS {ten.get('rss_mb', float('nan')):.0f} MB "
                  f"(process peak {ten.get('peak_mb', float('nan')):.0f} MB)", flush=True)
        serving = []
        if not args.skip_serve:
            from scale_serve import measure_serving

            counts = (2, 3) if args.quick else (2, 6, 14)
            serving = measure_serving(work / "en.npy", min(args.serve_size, max(sizes)), counts,
                                      requests=2000 if args.quick else 12000, seconds=5 if args.quick else 15)
    if args.merge:  # earlier runs' results for what this one did not run (this run's win)
        old = json.loads(Path(args.merge).read_text())
        for stage, by_size in old.get("stages", {}).items():
            for n, r in by_size.items():
                results.setdefault(stage, {}).setdefault(int(n), r)
        sizes = sorted({*sizes, *old.get("sizes", [])})
        memory = memory or old.get("serve_memory", [])
        serving = serving or old.get("serving", [])
        info = info if info.get("max_size", 0) >= old.get("extension", {}).get("max_size", 0) else old["extension"]
    rows = summarise(results, sizes, rates)
    report(rows, sizes, memory, serving)
    png = plot(results, sizes, out.with_suffix(".png"), f"vislex stages, {rates['cores']} cores, device {args.device}")
    payload = {"sizes": sizes, "device": args.device, "machine": rates, "data": str(data) if data else "synthetic",
               "extension": info, "stages": {s: {str(n): r for n, r in v.items()} for s, v in results.items()},
               "summary": rows, "serve_memory": memory, "serving": serving, "plot": str(png) if png else None}
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}" + (f" and {png}" if png else ""))


# A stage that finishes under this many seconds runs SHORT_REPEATS times (each in its own fresh process) and
# reports its median: a single 0.1 s load is at the mercy of the VM (the 200k .npy load measured 0.31-0.76 s in
# three runs on the quiet box, 0.08-0.10 s at 50k), which made its 200k/50k ratio read anywhere from 3x to 8x.
SHORT_SECONDS = 2.0
SHORT_REPEATS = 3


def repeat_if_short(first: dict, again, seconds: float = SHORT_SECONDS, repeats: int = SHORT_REPEATS) -> dict:
    """``first`` if it took ``seconds`` or more (or failed), else the run with the median time of ``repeats`` runs
    (``first`` and ``repeats - 1`` calls of ``again``), with every run's seconds in ``runs_s``."""
    if "seconds" not in first or first["seconds"] >= seconds or repeats <= 1:
        return first
    runs = [first] + [again() for _ in range(repeats - 1)]
    timed = sorted((r for r in runs if "seconds" in r), key=lambda r: r["seconds"])
    median = dict(timed[len(timed) // 2])
    median["runs_s"] = [round(r["seconds"], 4) for r in runs if "seconds" in r]
    return median


def report(rows: list[dict], sizes: list[int], memory: list[dict], serving: list[dict]) -> None:
    cols = [("stage", "stage", "")]
    for n in sizes:
        cols += [(f"s_{n}", f"{n // 1000}k s", ".2f"), (f"mb_{n}", f"{n // 1000}k MB", ".0f")]
    cols += [("growth_exponent", "b", ".2f"), ("growth", "growth", ""), ("ratio_largest_to_50k", "max/50k", ".2f"),
             ("bound_at_largest", "largest run bound by", "")]
    print("\nTime (s) and peak RSS (MB) per stage; b = fitted exponent of time ~ N^b")
    print_table(rows, cols)
    if memory:
        print("\nServing memory (RSS of the registry: spaces, indexes, mapped rows; per language of a 2-language hub)")
        print_table([m for m in memory if "rss_mb" in m],
                    [("size", "words", "d"), ("dtype", "dtype", ""), ("languages", "langs", "d"),
                     ("rss_mb", "RSS MB", ".0f"), ("rss_per_language_mb", "MB/lang", ".0f"),
                     ("array_bytes_mb", "arrays MB", ".0f")])
    if serving:
        print("\nServing, GET /v1/translate (CSLS, k=5, tables) at concurrency 64")
        print_table(serving, [("languages", "langs", "d"), ("pairs", "pairs", "d"), ("size", "words", "d"),
                              ("req_per_s", "req/s", ".0f"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
                              ("errors", "errors", "d"), ("rss_mib", "RSS MiB", "d"), ("ready_s", "ready s", ".0f")])


def markdown(payload: dict) -> str:
    """The summary of a scale.json as markdown tables (README's cost curves)."""
    sizes = payload["sizes"]
    head = "| stage | " + " | ".join(f"{n // 1000}k s / MB" for n in sizes) + " | growth (b) | largest/50k | largest run bound by |"
    lines = [head, "|" + "---|" * (len(sizes) + 4)]
    for row in payload["summary"]:
        cells = []
        for n in sizes:
            sec, mb = row.get(f"s_{n}"), row.get(f"mb_{n}")
            cells.append("" if sec is None else f"{sec:.2f} / {mb:.0f}" if sec < 10 else f"{sec:.0f} / {mb:.0f}")
        b = row.get("growth_exponent")
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + f" | {row.get('growth', '')}"
                     f"{'' if b is None else f' ({b:.2f})'} | {row.get('ratio_largest_to_50k', '') or ''} |"
                     f" {row.get('bound_at_largest', '')} |")
    memory = [m for m in payload.get("serve_memory", []) if "rss_mb" in m]
    if memory:
        lines += ["", "| words | dtype | languages | RSS MB | MB per language |", "|---|---|---|---|---|"]
        lines += [f"| {m['size']} | {m['dtype']} | {m['languages']} | {m['rss_mb']:.0f} | {m['rss_per_language_mb']:.0f} |"
                  for m in memory]
    if payload.get("serving"):
        lines += ["", "| languages | pairs | words | req/s | p50 ms | p99 ms | server RSS MiB |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['languages']} | {r['pairs']} | {r['size']} | {r['req_per_s']:.0f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['rss_mib']} |" for r in payload["serving"]]
    return "\n".join(lines)


def run_instamap_check(args) -> None:
    """InstaMap engines/variants on real en→fr and en→de (50k): P@1 NN/CSLS, seconds, peak (issue 18 item 1)."""
    if not (SHARED_DATA / "vectors" / "en.npy").is_file():
        print(f"{SHARED_DATA} not present: --instamap-check needs the real vectors; nothing measured.")
        return
    rows = []
    # The code variant on the reference engine costs the reference's searches over the whole vocabularies
    # (slowest of all); it is one --instamap-variants entry away.
    variants = [tuple(v.split("/")) for v in args.instamap_variants.split(",")]
    for pair in ("en-fr", "en-de"):
        for engine, variant in variants:
            r = run_child("instamap_check", 50000, SHARED_DATA, args.device,
                          {"pair": pair, "engine": engine, "variant": variant}, args.timeout)
            rows.append({"pair": pair, "engine": engine, "variant": variant, **r})
            print(json.dumps(rows[-1], default=str), flush=True)
    print_table(rows, [("pair", "pair", ""), ("variant", "variant", ""), ("engine", "engine", ""),
                       ("p1_nn", "P@1 NN", ".2f"), ("p1_csls", "P@1 CSLS", ".2f"), ("seconds", "align s", ".1f"),
                       ("peak_mb", "peak MB", ".0f"), ("final_pairs", "pairs", "d")])
    out = Path(args.out) if args.out else RESULTS / "scale-instamap.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "rows": rows}, indent=2, default=str))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, 2-3 served languages")
    ap.add_argument("--sizes", default=None, help="comma-separated vocabulary sizes (default 20000,50000,100000,200000)")
    ap.add_argument("--stages", default=None, help="comma-separated stages (default: all)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", default=None, help="JSON path (the PNG goes beside it)")
    ap.add_argument("--skip-serve", action="store_true", help="no server load test")
    ap.add_argument("--skip-memory", action="store_true", help="no serving-memory measurements")
    ap.add_argument("--serve-size", type=int, default=20000, help="words per served language in the load test")
    ap.add_argument("--reference-max-size", type=int, default=50000,
                    help="largest size for InstaMap's reference engine and code variant (both slow)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per stage run")
    ap.add_argument("--instamap-check", action="store_true", help="InstaMap engines/variants: P@1 on en-fr, en-de")
    ap.add_argument("--instamap-variants", default="fast/paper,reference/paper,fast/code",
                    help="engine/variant list for --instamap-check (also reference/code)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--extra", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--markdown", default=None, metavar="JSON", help="print a scale.json's tables as markdown")
    ap.add_argument("--merge", default=None, metavar="JSON",
                    help="fill in stages/sizes this run skips from an earlier scale.json (e.g. rerun one size)")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
    elif args.child:
        child_main(args)
    elif args.instamap_check:
        run_instamap_check(args)
    else:
        run_scale(args)


if __name__ == "__main__":
    main()
