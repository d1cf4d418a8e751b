"""benchmarks/scale.py (issue 18): the synthetic extension keeps the real statistics; --quick writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import SHORT_SECONDS, growth, growth_label, repeat_if_short  # noqa: E402
from scale_stages import extend_space, nn_cosine  # noqa: E402


@pytest.fixture(scope="module")
def clustered():
    """A stand-in for a real space: clustered rows with an anisotropic covariance and a spread of norms."""
    rng = np.random.default_rng(0)
    d = 32
    centres = rng.standard_normal((60, d)) * np.linspace(2.0, 0.3, d)
    V = centres[rng.integers(0, 60, 2000)] + rng.standard_normal((2000, d)) * np.linspace(1.0, 0.4, d)
    V *= rng.uniform(0.6, 1.4, (2000, 1))
    return (V + 0.5).astype(np.float32)


def test_extension_keeps_norms_covariance_and_neighbour_similarity(clustered):
    V = clustered
    ext, info = extend_space(V, 6000, seed=1)
    assert ext.shape == (6000, V.shape[1]) and info["synthetic_rows"] == 4000
    np.testing.assert_array_equal(ext[:2000], V)  # the real rows come first, untouched
    real, syn = ext[:2000], ext[2000:]
    # Norms: mean and spread within 5 %.
    rn, sn = np.linalg.norm(real, axis=1), np.linalg.norm(syn, axis=1)
    assert abs(sn.mean() / rn.mean() - 1) < 0.05 and abs(sn.std() / rn.std() - 1) < 0.25
    # Mean within 5 % of the spread (√tr Σ); covariance within 15 % (relative Frobenius).
    spread = np.sqrt(np.trace(np.cov(real.T)))
    assert np.linalg.norm(syn.mean(0) - real.mean(0)) < 0.05 * spread
    cov_r, cov_s = np.cov(real.T), np.cov(syn.T)
    assert np.linalg.norm(cov_s - cov_r) / np.linalg.norm(cov_r) < 0.15
    # Neighbour statistics: a synthetic word's nearest-neighbour cosine (among all rows) is a real word's,
    # median within 0.05; and it is not a copy of its donor (no cosine of 1).
    probe = np.random.default_rng(2).choice(2000, 400, replace=False)
    real_nn = nn_cosine(ext, probe)
    syn_nn = nn_cosine(ext, 2000 + probe)
    assert abs(np.median(syn_nn) - np.median(real_nn)) < 0.05
    assert syn_nn.max() < 0.999
    # Asking for fewer rows than exist cuts the real space.
    cut, cut_info = extend_space(V, 500)
    assert cut.shape == (500, V.shape[1]) and cut_info["synthetic_rows"] == 0


def test_short_stages_report_the_median_of_three_runs_long_ones_run_once():
    later = iter([{"seconds": 0.9, "peak_mb": 2}, {"seconds": 0.1, "peak_mb": 3}])
    r = repeat_if_short({"seconds": 0.2, "peak_mb": 1}, lambda: next(later))
    assert r["seconds"] == 0.2 and r["peak_mb"] == 1 and r["runs_s"] == [0.2, 0.9, 0.1]
    calls = []
    long = {"seconds": SHORT_SECONDS + 1}
    assert repeat_if_short(long, lambda: calls.append(1)) is long and calls == []
    failed = {"error": "boom"}
    assert repeat_if_short(failed, lambda: calls.append(1)) is failed and calls == []


def test_growth_fit_recovers_exponents():
    sizes = [20000, 50000, 100000, 200000]
    assert growth(sizes, [3e-9 * n ** 2 for n in sizes]) == pytest.approx(2.0)
    assert growth_label(growth(sizes, [1e-4 * n for n in sizes])) == "linear"
    assert growth_label(2.0) == "quadratic" and growth_label(0.1).startswith("flat")
    assert growth([20000], [1.0]) is None


@pytest.mark.slow
def test_quick_run_writes_json_and_plot(tmp_path):
    out = tmp_path / "scale.json"
    env = {**os.environ, "VISLEX_SHARED_DATA": str(tmp_path / "absent")}  # synthetic spaces: no shared data needed
    stages = "load_npy,induction,vecmap+instamap,l1"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--skip-serve",
                           "--stages", stages, "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["sizes"] == [2000, 5000] and payload["data"] == "synthetic"
    for stage in stages.split(","):
        for n in ("2000", "5000"):
            run = payload["stages"][stage][n]
            assert "error" not in run, (stage, n, run)
            assert run["seconds"] > 0 and run["peak_mb"] > run["import_mb"] > 0
    summary = {row["stage"]: row for row in payload["summary"]}
    assert summary["induction"]["growth_exponent"] is not None
    assert payload["serve_memory"] and any(m.get("ten_languages") for m in payload["serve_memory"])
    l1 = payload["stages"]["l1"]["5000"]
    assert l1["l1_work"] <= 2e10 and l1["l1_stop"]  # --quick gives L1 a 2e10 budget
    if payload["plot"]:
        assert Path(payload["plot"]).stat().st_size > 10_000
