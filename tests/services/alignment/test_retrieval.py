"""Chunked exact NN / CSLS retrieval against brute force, and mutual NN on a planted permutation."""

from __future__ import annotations

import numpy as np
import pytest

from services.alignment.retrieval import (
    csls_topk,
    knn_mean_similarity,
    mutual_nn,
    nn_topk,
)
from services.errors import InvalidInput

BACKENDS = ["faiss", "numpy", "torch"]


def unit_rows(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def spaces():
    rng = np.random.default_rng(11)
    return unit_rows(rng.standard_normal((230, 12))), unit_rows(rng.standard_normal((310, 12)))


def brute_knn_mean(Q, T, k):
    return np.sort(Q @ T.T, axis=1)[:, ::-1][:, :k].mean(axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nn_topk_matches_brute_force(spaces, backend):
    Q, T = spaces
    sims = Q @ T.T
    scores, idx = nn_topk(Q, T, 7, backend=backend, chunk_rows=50)  # several chunks
    expected = np.argsort(-sims, axis=1)[:, :7]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1), atol=1e-5)
    assert scores.dtype == np.float32 and idx.dtype == np.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_mean_similarity(spaces, backend):
    Q, T = spaces
    np.testing.assert_allclose(knn_mean_similarity(Q, T, 10, backend=backend), brute_knn_mean(Q, T, 10), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_csls_equals_brute_force(spaces, backend):
    Q, T = spaces
    r_target = brute_knn_mean(T, Q, 10)  # r_S(y)
    r_query = brute_knn_mean(Q, T, 10)  # r_T(x)
    csls = 2 * Q @ T.T - r_target[None, :] - r_query[:, None]
    expected = np.argsort(-csls, axis=1)[:, :5]
    scores, idx = csls_topk(Q, T, 5, r_target, r_query, backend=backend, chunk_rows=64)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(csls, expected, axis=1), atol=1e-5)
    # Without r_query the ranking is the same, scores shift by r_query.
    scores2, idx2 = csls_topk(Q, T, 5, r_target, backend=backend)
    np.testing.assert_array_equal(idx2, expected)
    np.testing.assert_allclose(scores2 - r_query[:, None], scores, atol=1e-5)


def test_csls_differs_from_nn_on_a_hub():
    # q_i = (2h + e_i)/√5 and t_i = (e_i + h/2)/√1.25: cos(q_i, hub) = 0.894 beats cos(q_i, t_i) = 0.8,
    # but r_S(hub) = 0.894 and r_S(t_i) = (0.8 + 9·0.4)/10 = 0.44, so CSLS prefers t_i (1.16 vs 0.894).
    n, d = 20, 24
    eye = np.eye(d, dtype=np.float32)
    hub = eye[0]
    Q = unit_rows(2 * hub + eye[1 : n + 1])
    T = np.vstack([unit_rows(eye[1 : n + 1] + 0.5 * hub), hub[None, :]])
    _, nn_idx = nn_topk(Q, T, 1)
    assert (nn_idx[:, 0] == n).all()
    r_target = knn_mean_similarity(T, Q, 10)
    np.testing.assert_allclose(r_target[[0, n]], [0.44, 2 / np.sqrt(5)], atol=1e-5)
    scores, csls_idx = csls_topk(Q, T, 2, r_target)
    np.testing.assert_array_equal(csls_idx[:, 0], np.arange(n))
    np.testing.assert_allclose(scores[:, 0], 1.6 - 0.44, atol=1e-5)


def test_k_larger_than_targets_and_errors(spaces):
    Q, T = spaces
    _, idx = nn_topk(Q[:3], T[:4], 10)
    assert idx.shape == (3, 4) and sorted(idx[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(InvalidInput, match="dimension mismatch"):
        nn_topk(Q, T[:, :5], 3)
    with pytest.raises(InvalidInput):
        csls_topk(Q, T, 3, np.zeros(3))


@pytest.mark.parametrize("retrieval", ["csls", "nn"])
def test_mutual_nn_recovers_planted_permutation(retrieval):
    rng = np.random.default_rng(2)
    n, d = 200, 16
    X = unit_rows(rng.standard_normal((n, d)))
    perm = rng.permutation(n)
    Y = np.empty_like(X)
    Y[perm] = unit_rows(X + 0.05 * rng.standard_normal((n, d)))  # source i ↔ target perm[i]
    pairs, scores = mutual_nn(X, Y, retrieval=retrieval, knn=10)
    assert len(pairs) == n
    np.testing.assert_array_equal(pairs[:, 1], perm[pairs[:, 0]])
    assert np.all(np.diff(scores) <= 0)  # best first
    # Restricting the candidate sets keeps only pairs inside both prefixes.
    sub, _ = mutual_nn(X, Y, retrieval=retrieval, max_src=100, max_tgt=150)
    assert np.all(sub[:, 0] < 100) and np.all(sub[:, 1] < 150)
    found = set(map(tuple, sub.tolist()))
    planted = {(int(i), int(perm[i])) for i in np.flatnonzero(perm[:100] < 150)}
    assert planted <= found
    inverse = np.argsort(perm)
    # Any other pair can only join a source and a target whose true partners were cut off.
    assert all(perm[i] >= 150 and inverse[j] >= 100 for i, j in found - planted)


def test_mutual_nn_drops_non_mutual():
    X = unit_rows(np.array([[1.0, 0.0], [0.9, 0.1]]))
    Y = unit_rows(np.array([[1.0, 0.0], [0.0, 1.0]]))
    pairs, _ = mutual_nn(X, Y, retrieval="nn")
    assert pairs.tolist() == [[0, 0]]  # source 1's best is target 0, which prefers source 0
