"""BLI metrics on hand-computed examples (NN and CSLS) and on a planted alignment."""

from __future__ import annotations

import numpy as np
import pytest

from services.alignment.evaluation import bli_evaluate, gold_matrix, paired_comparison
from services.errors import InvalidInput


def unit_rows(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def angles(deg):
    rad = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# Targets on the unit circle; source i sits at an angle, so the NN ranking is the angular distance.
TARGET_ANGLES = [0, 10, 25, 45, 70, 100, 140, 180, 230, 290, 330]
SOURCE_ANGLES = [1, 24, 60, 181]


def test_gold_matrix_groups_and_pads():
    sources, gold = gold_matrix(np.array([[3, 1], [0, 2], [3, 4], [3, 1]]))
    assert sources.tolist() == [0, 3]
    assert gold.tolist() == [[2, -1], [1, 4]]


def test_nn_metrics_hand_computed():
    X, Y = angles(SOURCE_ANGLES), angles(TARGET_ANGLES)
    # Rankings by angular distance (target index: angle):
    #  src 0 (1°):   0(0) 1(10) 2(25) 3(45) ...       gold 1  -> rank 2
    #  src 1 (24°):  2(25) 1(10) 3(45) 0(0) 4(70) ... gold {4, 7} -> best gold 4, rank 5
    #  src 2 (60°):  4(70) 3(45) 2(25) 5(100) 1(10) 0(0) 6(140) ... gold 0 -> rank 6
    #  src 3 (181°): 7(180) ...                         gold 7  -> rank 1
    test = np.array([[0, 1], [1, 4], [1, 7], [2, 0], [3, 7]])
    m = bli_evaluate(X, Y, test, retrieval="nn", n_oov_sources=1)
    assert m["n_queries"] == 4
    assert m["p@1"] == pytest.approx(1 / 4)
    assert m["p@5"] == pytest.approx(3 / 4)
    assert m["p@10"] == pytest.approx(4 / 4)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 5 + 1 / 6 + 1) / 4)
    assert m["coverage"] == pytest.approx(4 / 5)
    assert "ranks" not in m
    with_ranks = bli_evaluate(X, Y, test, retrieval="nn", n_oov_sources=1, return_ranks=True)
    assert with_ranks["sources"].tolist() == [0, 1, 2, 3] and with_ranks["ranks"].tolist() == [2, 5, 6, 1]


def test_csls_metrics_match_explicit_formula():
    rng = np.random.default_rng(4)
    X = unit_rows(rng.standard_normal((60, 6)))
    Y = unit_rows(rng.standard_normal((80, 6)))
    test = np.stack([rng.integers(0, 60, 40), rng.integers(0, 80, 40)], axis=1)
    k = 10
    sims = X @ Y.T
    r_s = np.sort(sims.T, axis=1)[:, ::-1][:, :k].mean(axis=1)  # over ALL sources
    csls = 2 * sims - r_s[None, :]
    ranks = []
    for s in np.unique(test[:, 0]):
        gold = test[test[:, 0] == s, 1]
        order = np.argsort(-csls[s], kind="stable")
        ranks.append(1 + np.flatnonzero(np.isin(order, gold))[0])
    ranks = np.array(ranks)
    m = bli_evaluate(X * 3.0, Y, test, retrieval="csls", knn=k)  # scale must not matter (cosine)
    assert m["p@1"] == pytest.approx(np.mean(ranks <= 1))
    assert m["p@5"] == pytest.approx(np.mean(ranks <= 5))
    assert m["p@10"] == pytest.approx(np.mean(ranks <= 10))
    assert m["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert m["coverage"] == 1.0


def test_planted_alignment_is_perfect_and_random_is_not():
    rng = np.random.default_rng(9)
    X = unit_rows(rng.standard_normal((500, 20)))
    R, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    Y = (X @ R).astype(np.float32)
    test = np.stack([np.arange(0, 500, 5), np.arange(0, 500, 5)], axis=1)
    for retrieval in ("nn", "csls"):
        m = bli_evaluate(X @ R, Y, test, retrieval=retrieval)
        assert m["p@1"] == 1.0 and m["mrr"] == 1.0
        assert bli_evaluate(X, Y, test, retrieval=retrieval)["p@1"] < 0.1


def test_bad_inputs():
    X = unit_rows(np.eye(3))
    with pytest.raises(InvalidInput, match="no test pairs"):
        bli_evaluate(X, X, np.zeros((0, 2), dtype=np.int64))
    with pytest.raises(InvalidInput, match="dimension mismatch"):
        bli_evaluate(X, X[:, :2], np.array([[0, 0]]))
    with pytest.raises(InvalidInput, match="outside"):
        bli_evaluate(X, X, np.array([[0, 5]]))
    with pytest.raises(InvalidInput):
        bli_evaluate(X, X, np.array([[0, 0]]), retrieval="cosine")


def test_paired_comparison_counts_won_and_lost_queries():
    before = np.array([True] * 50 + [False] * 50)
    after = before.copy()
    after[50:58] = True  # 8 queries won, none lost
    out = paired_comparison(before, after)
    assert (out["won"], out["lost"], out["n_queries"]) == (8, 0, 100)
    assert out["delta"] == pytest.approx(8.0)
    assert out["p_sign"] == pytest.approx(2 * 0.5 ** 8)
    assert 0 < out["ci_low"] < 8.0 < out["ci_high"] <= 16.0
    balanced = after.copy()
    balanced[:8] = False  # 8 won, 8 lost: no difference, an interval around 0
    out = paired_comparison(before, balanced)
    assert (out["won"], out["lost"], out["delta"], out["p_sign"]) == (8, 8, 0.0, 1.0)
    assert out["ci_low"] < 0 < out["ci_high"]
    with pytest.raises(InvalidInput):
        paired_comparison(before, after[:10])


def test_nn_evaluation_reads_only_the_query_rows_of_the_source(monkeypatch):
    """NN ranks need the test queries alone: only they are normalised (a 200k-word source is not copied for 1,500
    queries), and rows outside them (here NaN) change nothing; CSLS normalises every source row (r_S reads them)."""
    import services.alignment.evaluation as evaluation

    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    Y = (X + 0.1 * rng.standard_normal((300, 16))).astype(np.float32)
    pairs = np.stack([np.arange(50), np.arange(50)], axis=1)
    clean = bli_evaluate(X, Y, pairs, retrieval="nn")
    poisoned = X.copy()
    poisoned[50:] = np.nan
    assert bli_evaluate(poisoned, Y, pairs, retrieval="nn") == clean
    assert clean["p@1"] > 0.9
    normalised: list[int] = []
    unit_rows = evaluation._unit_rows
    monkeypatch.setattr(evaluation, "_unit_rows", lambda a: normalised.append(len(a)) or unit_rows(a))
    bli_evaluate(X, Y, pairs, retrieval="nn")
    assert sorted(normalised) == [50, 300]  # the 50 queries and the targets, never the 300 source rows
    normalised.clear()
    bli_evaluate(X, Y, pairs, retrieval="csls")
    assert sorted(normalised) == [300, 300]
