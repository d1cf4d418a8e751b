"""The one-sweep mutual NN (retrieval.mutual_nn_fused) against the reference's two searches per direction."""

import numpy as np
import pytest

import services.alignment.sweep as sweep
from services.alignment.retrieval import mutual_nn, mutual_nn_fused, score_blocks
from tests.services.alignment.align_fixtures import unit


@pytest.fixture(scope="module")
def noisy_spaces():
    rng = np.random.default_rng(3)
    X = unit(rng.standard_normal((900, 24)))
    Y = unit(X[rng.integers(0, 900, 1100)] + 0.6 * rng.standard_normal((1100, 24)))  # many near-ties, hubs
    return X, Y


def _as_set(pairs):
    return {tuple(p) for p in pairs.tolist()}


@pytest.mark.parametrize("retrieval_kind", ["nn", "csls"])
def test_fused_sweep_finds_the_reference_pairs(noisy_spaces, retrieval_kind, monkeypatch):
    X, Y = noisy_spaces
    monkeypatch.setattr(sweep, "FUSED_MIN_ROWS", 64)
    monkeypatch.setattr(sweep, "FUSED_BLOCK_ELEMENTS", 64 * 1100)  # 15 blocks: the running column state
    ref, ref_scores = mutual_nn(X, Y, retrieval=retrieval_kind, backend="faiss")
    fused, fused_scores = mutual_nn(X, Y, retrieval=retrieval_kind)
    assert _as_set(fused) == _as_set(ref) and len(ref) > 100
    np.testing.assert_allclose(np.sort(fused_scores), np.sort(ref_scores), atol=1e-5)
    assert np.all(np.diff(fused_scores) <= 0)
    # Prefix restriction as before.
    sub, _ = mutual_nn(X, Y, retrieval=retrieval_kind, max_src=300, max_tgt=500)
    ref_sub, _ = mutual_nn(X, Y, retrieval=retrieval_kind, max_src=300, max_tgt=500, backend="faiss")
    assert _as_set(sub) == _as_set(ref_sub)


def test_limited_second_sweep_is_the_reference_l1_rule(noisy_spaces, monkeypatch):
    """fwd_rows / bwd_cols: neighbours of the first rows and columns only, r over everything (l1_dictionary)."""
    from services.alignment.l1 import l1_dictionary

    X, Y = noisy_spaces
    monkeypatch.setattr(sweep, "FUSED_MIN_ROWS", 64)
    monkeypatch.setattr(sweep, "FUSED_BLOCK_ELEMENTS", 64 * 1100)
    for cut in (200, 700):
        got = _as_set(l1_dictionary(X * 1.3, Y, max_vocab=cut))  # rows as given: not unit
        assert got == _as_set(l1_dictionary(X * 1.3, Y, max_vocab=cut, backend="faiss")) and len(got) > 10
    fwd, bwd, _, stats = mutual_nn_fused(X, Y, fwd_rows=100, bwd_cols=50)
    assert fwd.shape == (100,) and bwd.shape == (50,) and 1 <= stats["sweeps"] <= 2
    assert stats["forward_rows"] == 100 and 0 <= stats["certified_rows"] <= 100


@pytest.mark.parametrize("candidates", [1, 64, 5000])  # every row redone / most certified / every row (M = m)
def test_certified_csls_equals_the_reference_whatever_is_certified(noisy_spaces, monkeypatch, candidates):
    """The CPU CSLS keeps each row's best cosines from the first sweep and scores again only the rows whose best
    is not certified among them: the pairs and scores are the reference's however many rows that is."""
    X, Y = noisy_spaces
    monkeypatch.setattr(sweep, "FUSED_MIN_ROWS", 64)
    monkeypatch.setattr(sweep, "FUSED_BLOCK_ELEMENTS", 64 * 1100)
    monkeypatch.setattr(sweep, "CSLS_CANDIDATES", candidates)
    ref, ref_scores = mutual_nn(X, Y, retrieval="csls", backend="faiss")
    got, got_scores = mutual_nn(X, Y, retrieval="csls")
    assert _as_set(got) == _as_set(ref) and len(ref) > 100
    np.testing.assert_allclose(np.sort(got_scores), np.sort(ref_scores), atol=1e-5)
    fwd, _, fwd_scores, stats = mutual_nn_fused(X, Y, retrieval="csls", fwd_rows=700)
    if candidates >= len(Y):
        assert stats["certified_rows"] == 700 and stats["sweeps"] == 1
    elif candidates == 1:  # the best cosine alone rarely vouches for a row: the second sweep scores most rows
        assert stats["certified_rows"] < 100 and stats["sweeps"] > 1.5 and stats["low_r_targets"] > 0
    # each row's forward target is its best under 2 cos - r_S (the reference's forward rule)
    from services.alignment.retrieval import knn_mean_similarity

    r_src, r_tgt = knn_mean_similarity(X, Y, 10), knn_mean_similarity(Y, X, 10)
    full = 2 * X[:700] @ Y.T - r_src[:700, None] - r_tgt[None, :]
    np.testing.assert_allclose(fwd_scores, full.max(axis=1), atol=1e-5)
    near = full[np.arange(700), fwd] >= full.max(axis=1) - 1e-5
    assert near.all()


@pytest.mark.parametrize("shape,k", [((300, 20000), 10), ((64, 5000), 64), ((10, 100), 10), ((5, 2051), 7)])
def test_row_topk_is_torchs_topk(shape, k):
    import torch

    rng = np.random.default_rng(1)
    S = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    values, cols = sweep.row_topk(S, k)
    expected = torch.topk(S, k, dim=1)
    assert torch.equal(values, expected.values)
    assert torch.equal(torch.gather(S, 1, cols), values)  # the columns hold those values (order of ties aside)


def test_score_blocks_cover_every_row_exactly():
    rng = np.random.default_rng(0)
    Q, T = rng.standard_normal((1000, 8)).astype(np.float32), rng.standard_normal((300, 8)).astype(np.float32)
    seen = np.zeros(len(Q), dtype=int)
    for start, S in score_blocks(Q, T, block_elements=300 * 300):
        np.testing.assert_allclose(S.numpy(), Q[start : start + len(S)] @ T.T, rtol=1e-5, atol=1e-5)
        seen[start : start + len(S)] += 1
    assert np.all(seen == 1)


def test_the_cuda_code_path_gives_the_same_dictionaries(noisy_spaces, monkeypatch):
    """score_blocks' torch branch (the one CUDA runs), exercised on CPU tensors."""
    X, Y = noisy_spaces
    expected = {kind: _as_set(mutual_nn(X, Y, retrieval=kind)[0]) for kind in ("nn", "csls")}
    monkeypatch.setattr(sweep, "TORCH_BLOCKS_ON_CPU", True)
    monkeypatch.setattr(sweep, "FUSED_MIN_ROWS", 64)
    monkeypatch.setattr(sweep, "FUSED_BLOCK_ELEMENTS", 64 * 1100)
    for kind in ("nn", "csls"):
        assert _as_set(mutual_nn(X, Y, retrieval=kind)[0]) == expected[kind]


def test_running_column_top_k_over_blocks_is_the_exact_top_k():
    # Blocks of 64 rows over 500 columns: the first blocks change most columns (full merge), later ones a few
    # (only the columns whose block maximum enters are compared and merged).
    rng = np.random.default_rng(5)
    S = rng.standard_normal((2000, 500)).astype(np.float32)
    col = np.full((10, 500), -np.inf, np.float32)
    for start in range(0, len(S), 64):
        sweep._column_topk_np(np.ascontiguousarray(S[start : start + 64]), col)
    np.testing.assert_array_equal(col, -np.sort(-S, axis=0)[:10])
