"""Run every benchmark in turn (``make bench``), one process each, so their timings do not overlap.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only bli,serve]

Each prints its own table and writes benchmarks/results/<name>.json; a failing one is reported and
the rest still run. Those that need ../shared/data say so and measure nothing when it is absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (script, extra args for --quick)
BENCHMARKS = {
    "bli": ("bli.py", ["--pairs", "en-fr", "--skip-faithful"]),
    "encoder_spaces": ("encoder_spaces.py", ["--pairs", "en-fr"]),
    "serve": ("serve.py", ["--quick"]),
    "jobs": ("jobs.py", ["--jobs", "5", "--polls", "100"]),
    "fingerprints": ("fingerprints.py", ["--words", "2000"]),
    "uclip_speed": ("uclip_speed.py", ["--quick"]),
    # the real-photo benchmarks (../shared/data): compact CLIPs, uCLIP, WALIP step 1, Globetrotter, cost curves
    "clip_train": ("clip_train.py", ["--quick", "--no-http"]),
    "clip_maps": ("clip_maps.py", ["--epochs", "5"]),
    "clip_hubness": ("clip_hubness.py", ["--folds", "0"]),
    "walip_seeds": ("walip_seeds.py", ["--pairs", "en-de"]),
    "uclip": ("uclip.py", ["--quick"]),
    "walip_visual": ("walip_visual.py", ["--grid", "small"]),
    "globetrotter": ("globetrotter.py", ["--quick", "--no-http"]),
    "scale": ("scale.py", ["--quick"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not the reported numbers")
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = ap.parse_args()
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
            return 2
        script, quick_args = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        print(f"\n===== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"===== {name}: exit {rc} after {time.perf_counter() - started:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
