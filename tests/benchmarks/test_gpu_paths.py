"""benchmarks/gpu_paths.py (issue 18): the planted world is a noisy rotation, and the script runs where no GPU is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_paths import planted_world  # noqa: E402


def test_the_planted_target_is_a_noisy_rotation_of_the_source():
    X, Y = planted_world(500, d=32, noise=0.05)
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(Y, axis=1), 1, atol=1e-5)
    # Procrustes from all pairs recovers a map under which each row's nearest target is its own.
    U, _, Vt = np.linalg.svd(X.T @ Y)
    nearest = np.argmax((X @ (U @ Vt)) @ Y.T, axis=1)
    assert np.mean(nearest == np.arange(500)) > 0.99
    # ... and the world is not trivial: without the map, rows do not find their own.
    assert np.mean(np.argmax(X @ Y.T, axis=1) == np.arange(500)) < 0.1


def test_without_cuda_it_measures_the_cpu_paths_and_writes_its_json(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_paths.py"), "--size", "1200",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    payload = json.loads((tmp_path / "gpu_paths.json").read_text())
    checks = {r["check"].split(" ")[0] for r in payload["rows"]}
    assert {"mutual", "InstaMap", "vecmap+instamap"} <= checks
    last = payload["rows"][-1]
    assert "% planted" in last["result"] and float(last["result"].split(", ")[1].split(" ")[0]) > 90
