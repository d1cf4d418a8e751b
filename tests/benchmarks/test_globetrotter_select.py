"""benchmarks/globetrotter_select.py (issue 16): the residual-weight rule and the score mix."""

from __future__ import annotations

import numpy as np

from benchmarks.globetrotter_select import choose_residual, mixed


def _cand(s, shares, variant="v", eligible=True):
    shares = np.asarray(shares, dtype=np.float64)
    return {"variant": variant, "s": s, "score": 100 * float(shares.mean()), "shares": shares, "eligible": eligible}


def test_rule_keeps_the_encoder_unless_the_dev_shows_a_gain_beyond_noise():
    rng = np.random.default_rng(0)
    raw = rng.random(1000)
    # a gain of 0.2 points with per-sentence noise far larger: within one paired SE -> the raw encoder (s = 0)
    noisy = raw + 0.002 + rng.normal(0, 0.2, 1000)
    assert choose_residual([_cand(0.0, raw), _cand(1.0, noisy)])["s"] == 0.0
    # the same mean gain, consistent on every sentence (paired SE ~0): the trained residual wins
    steady = raw + 0.002
    assert choose_residual([_cand(0.0, raw), _cand(1.0, steady)])["s"] == 1.0
    # two trained weights both clear the raw encoder; the smaller s within one paired SE of the best is kept
    jitter = rng.normal(0, 0.01, 1000)
    half = steady - 0.0001 + (jitter - jitter.mean())  # 0.01 points below the best, paired SE ~0.03
    assert choose_residual([_cand(0.0, raw), _cand(0.5, half), _cand(1.0, steady)])["s"] == 0.5


def test_rule_ignores_ineligible_candidates_and_prefers_the_higher_score_at_equal_weight():
    raw = np.full(100, 0.5)
    better = raw + 0.01
    best_ineligible = raw + 0.05
    chosen = choose_residual([_cand(0.0, raw), _cand(0.5, better, "a"), _cand(0.5, raw + 0.02, "b"),
                              _cand(0.25, best_ineligible, "mix", eligible=False)])
    assert chosen["variant"] == "b"


def test_score_mix_is_a_convex_combination_of_cosines():
    rng = np.random.default_rng(1)
    raw, trained = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    for s in (0.0, 0.3, 1.0):
        m = mixed(raw, trained, s)
        assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
        expected = (1 - s) * unit(raw) @ unit(raw).T + s * unit(trained) @ unit(trained).T
        assert np.allclose(m @ m.T, expected, atol=1e-5)
