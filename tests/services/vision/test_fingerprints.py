"""WALIP step 1 numerics (methods.md): fingerprints, visual-word filter, sparsification, CSLS matching."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput
from services.vision.fingerprints import (
    csls_all_scores_quantile,
    csls_threshold_matching,
    fingerprint_pivots,
    pivot_precision,
    sparsify_fingerprints,
    visual_word_mask,
    word_fingerprints,
)


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _brute_csls(Fs, Ft, knn):
    S = Fs @ Ft.T
    r_src = np.sort(S, axis=1)[:, -knn:].mean(1)
    r_tgt = np.sort(S.T, axis=1)[:, -knn:].mean(1)
    return 2 * S - r_src[:, None] - r_tgt[None, :]


def test_fingerprint_is_similarity_to_each_image():
    rng = np.random.default_rng(1)
    W, G = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(7, 8)))
    F = word_fingerprints(W, G)
    assert F.shape == (5, 7)
    assert np.allclose(F[2, 3], W[2] @ G[3], atol=1e-6)
    with pytest.raises(InvalidInput):
        word_fingerprints(W, G[:, :4])


def test_visual_filter_keeps_words_at_or_above_median_max():
    F = np.array([[0.1, 0.2], [0.5, 0.0], [0.3, 0.3], [0.9, 0.1]], dtype=np.float32)
    # f_max = 0.2, 0.5, 0.3, 0.9 -> median 0.4
    assert visual_word_mask(F).tolist() == [False, True, False, True]
    F3 = np.array([[0.1], [0.2], [0.3]], dtype=np.float32)  # median 0.2 itself is kept
    assert visual_word_mask(F3).tolist() == [False, True, True]
    # a stricter cut: the 0.75-quantile of (0.2, 0.5, 0.3, 0.9) is 0.6 -> only 0.9 stays
    assert visual_word_mask(F, quantile=0.75).tolist() == [False, False, False, True]


def test_sparsify_paper_per_word_quantile_then_unit():
    rng = np.random.default_rng(2)
    F = rng.random((6, 50)).astype(np.float32)
    F[0] *= 10  # scale one row: the per-word quantile must not care
    S = sparsify_fingerprints(F, 0.9, "paper")
    assert np.allclose(np.linalg.norm(S, axis=1), 1, atol=1e-5)
    for i in range(6):
        thr = np.quantile(F[i], 0.9)
        assert np.array_equal(S[i] > 0, F[i] >= thr)
    assert ((S > 0).sum(1) == 5).all()  # 10% of 50 coordinates survive in every row


def test_sparsify_code_variant_uses_one_global_quantile():
    rng = np.random.default_rng(3)
    F = rng.random((6, 50)).astype(np.float32)
    F[0] += 1.0  # row 0 holds the top 10% of the whole matrix: other rows keep nothing
    S = sparsify_fingerprints(F, 0.9, "code")
    thr = np.quantile(F, 0.9)
    assert np.array_equal(S > 0, F >= thr)
    assert (S[0] > 0).sum() == 30  # 10% of 300 coordinates, all in row 0
    assert not (S[1:] > 0).any()
    assert np.linalg.norm(S[0]) == pytest.approx(1, abs=1e-5)
    with pytest.raises(InvalidInput):
        sparsify_fingerprints(F, 0.9, "nope")


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.97])
def test_all_scores_quantile_exact_dense_and_chunked(q):
    rng = np.random.default_rng(4)
    Fs, Ft = _unit(rng.normal(size=(70, 16))), _unit(rng.normal(size=(55, 16)))
    r_q, r_t = rng.random(70).astype(np.float32) * 0.3, rng.random(55).astype(np.float32) * 0.3
    C = 2 * (Fs @ Ft.T) - r_q[:, None] - r_t[None, :]
    expected = np.quantile(C, q)
    dense = csls_all_scores_quantile(Fs, Ft, r_q, r_t, q)
    chunked = csls_all_scores_quantile(Fs, Ft, r_q, r_t, q, chunk_pairs=500, dense_limit=0)
    assert dense == pytest.approx(expected, abs=1e-6)
    assert chunked == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("k", [1, 3])
def test_matching_equals_brute_force(variant, k):
    rng = np.random.default_rng(5)
    Fs, Ft = _unit(rng.random((40, 20))), _unit(rng.random((35, 20)))
    q = 0.5
    C = _brute_csls(Fs, Ft, 10)
    top = np.argsort(-C, axis=1)[:, :k]
    top_scores = np.take_along_axis(C, top, 1)
    thr = np.quantile(C, q) if variant == "paper" else np.quantile(top_scores, q)
    expected = {(i, int(top[i, r])) for i in range(40) for r in range(k) if top_scores[i, r] >= thr - 1e-6}
    res = csls_threshold_matching(Fs, Ft, q=q, k=k, knn=10, variant=variant)
    got = {tuple(p) for p in res.pairs.tolist()}
    assert res.threshold == pytest.approx(thr, abs=1e-5)
    # ties at the threshold may fall either way in float32; everything else must match exactly
    assert len(got ^ expected) <= 1
    assert len(got) > 0


def test_matching_q_zero_keeps_everyone_and_paper_threshold_is_stricter_at_high_q():
    rng = np.random.default_rng(6)
    Fs, Ft = _unit(rng.random((30, 12))), _unit(rng.random((30, 12)))
    assert len(csls_threshold_matching(Fs, Ft, q=0.0).pairs) == 30
    # q over all scores (paper) sits below q over each row's best score (code)
    paper = csls_threshold_matching(Fs, Ft, q=0.9, variant="paper")
    code = csls_threshold_matching(Fs, Ft, q=0.9, variant="code")
    assert paper.threshold < code.threshold
    assert len(code.pairs) <= 4  # ~10% of 30 rows clear the 0.9-quantile of the row maxima


def test_pivots_recover_planted_pairs_and_map_to_original_indices():
    rng = np.random.default_rng(7)
    n_img, n = 60, 100
    patterns = rng.random((n, n_img)) ** 8  # peaky image profiles: each concept likes a few images
    src = (patterns + 0.02 * rng.random((n, n_img))).astype(np.float32)
    perm = rng.permutation(n)
    tgt = (patterns[perm] + 0.02 * rng.random((n, n_img))).astype(np.float32)
    gold = np.stack([perm, np.arange(n)], axis=1)  # tgt j translates src perm[j]
    res = fingerprint_pivots(src, tgt, q=0.5, k=1)
    assert len(res.src_kept) == 50 and len(res.tgt_kept) == 50  # the median filter keeps half
    assert set(res.pairs[:, 0]) <= set(res.src_kept.tolist())
    assert set(res.pairs[:, 1]) <= set(res.tgt_kept.tolist())
    m = pivot_precision(res.pairs, gold)
    assert m["n_evaluable"] == len(res.pairs) > 10
    assert m["precision"] > 0.9


def test_pivot_precision_counts_only_evaluable_sources():
    gold = np.array([[0, 5], [0, 6], [1, 7]])
    pairs = np.array([[0, 6], [1, 8], [2, 9]])  # correct, wrong, source not in gold
    m = pivot_precision(pairs, gold)
    assert m == {"precision": 0.5, "n_pivots": 3, "n_evaluable": 2, "n_correct": 1}
