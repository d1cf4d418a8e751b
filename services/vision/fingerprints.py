"""Image fingerprints, visual-word filtering and CSLS pivot matching (methods.md, WALIP step 1).

Pure functions: arrays in, arrays out. A fingerprint is a d_images-dim vector, so
fingerprint matrices are (words x images); the word x word CSLS scores are never held
densely for large vocabularies: top-k goes through ``services.alignment.retrieval`` and
the quantile threshold over *all* scores is computed exactly in two chunked passes.

Variants (``variant=``):
- ``"paper"`` (default): per-word 0.9-quantile sparsification; threshold = q-quantile of
  all CSLS scores between kept source and target words.
- ``"code"`` (the authors' released code): one global 0.9-quantile over the whole
  fingerprint matrix; threshold = q-quantile of the top-k scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.alignment import retrieval
from services.errors import InvalidInput

VARIANTS = ("paper", "code")
DENSE_SCORE_LIMIT = 1 << 24  # below this many word pairs the all-scores quantile is computed densely
_HIST_BINS = 1 << 16
_CSLS_RANGE = (-4.0, 4.0)  # 2 cos - r_T - r_S for unit rows lies in [-4, 4]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise InvalidInput(f"unknown fingerprint variant {variant!r}", detail={"known": list(VARIANTS)})


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def word_fingerprints(word_emb: np.ndarray, image_emb: np.ndarray) -> np.ndarray:
    """f(w) = [sim(text(w), image(g_1)), ..., sim(text(w), image(g_d))]; (n, d) float32 (WALIP step 1)."""
    W = np.asarray(word_emb, dtype=np.float32)
    G = np.asarray(image_emb, dtype=np.float32)
    if W.ndim != 2 or G.ndim != 2 or W.shape[1] != G.shape[1]:
        raise InvalidInput(
            "word and image embeddings must be 2-D with the same width",
            detail={"words": list(W.shape), "images": list(G.shape)},
        )
    return W @ G.T


def visual_word_mask(F: np.ndarray, quantile: float = 0.5) -> np.ndarray:
    """Keep words whose best image similarity is at or above the vocabulary median (WALIP step 1); ``quantile``
    other than 0.5 (ours) moves the cut: 0.7 keeps the 30 % most visual words."""
    if len(F) == 0:
        return np.zeros(0, dtype=bool)
    fmax = F.max(axis=1)
    return fmax >= np.quantile(fmax, quantile)


def sparsify_fingerprints(F: np.ndarray, quantile: float = 0.9, variant: str = "paper") -> np.ndarray:
    """Zero coordinates below the 0.9-quantile (per word: paper; global: code), then unit rows."""
    _check_variant(variant)
    F = np.asarray(F, dtype=np.float32)
    if len(F) == 0:
        return F.copy()
    if variant == "paper":
        thr = np.quantile(F, quantile, axis=1, keepdims=True).astype(np.float32)
    else:
        thr = np.float32(np.quantile(F, quantile))
    return _unit_rows(np.where(F >= thr, F, np.float32(0.0)))


def _score_chunks(Q: np.ndarray, T: np.ndarray, r_query: np.ndarray, r_target: np.ndarray, chunk_pairs: int):
    rows = max(1, chunk_pairs // max(1, len(T)))
    for start in range(0, len(Q), rows):
        S = Q[start:start + rows] @ T.T
        S *= 2.0
        S -= r_query[start:start + rows, None]
        S -= r_target[None, :]
        yield S


def csls_all_scores_quantile(Q: np.ndarray, T: np.ndarray, r_query: np.ndarray, r_target: np.ndarray, q: float,
                             *, chunk_pairs: int = 1 << 22, dense_limit: int = DENSE_SCORE_LIMIT) -> float:
    """Exact q-quantile (numpy 'linear') of all CSLS scores c_ij, in bounded memory.

    Small problems are computed densely; large ones with a fixed-range histogram pass that
    locates the bins holding the two order statistics, then a pass that collects those bins.
    """
    n, m = len(Q), len(T)
    N = n * m
    if N == 0:
        raise InvalidInput("cannot take a quantile of an empty score matrix")
    if N <= dense_limit:
        S = np.concatenate(list(_score_chunks(Q, T, r_query, r_target, chunk_pairs)))
        return float(np.quantile(S, q))
    lo, hi = _CSLS_RANGE
    scale = _HIST_BINS / (hi - lo)
    counts = np.zeros(_HIST_BINS, dtype=np.int64)
    for S in _score_chunks(Q, T, r_query, r_target, chunk_pairs):
        b = np.clip(((S - lo) * scale).astype(np.int64), 0, _HIST_BINS - 1)
        counts += np.bincount(b.ravel(), minlength=_HIST_BINS)
    pos = q * (N - 1)
    ranks = (int(np.floor(pos)), int(np.ceil(pos)))
    cum = np.cumsum(counts)
    bins = sorted({int(np.searchsorted(cum, r, side="right")) for r in ranks})
    collected: dict[int, list[np.ndarray]] = {b: [] for b in bins}
    for S in _score_chunks(Q, T, r_query, r_target, chunk_pairs):
        b = np.clip(((S - lo) * scale).astype(np.int64), 0, _HIST_BINS - 1)
        for target in bins:
            collected[target].append(S[b == target])
    values = []
    for r in ranks:
        target = int(np.searchsorted(cum, r, side="right"))
        before = int(cum[target - 1]) if target > 0 else 0
        vals = np.sort(np.concatenate(collected[target]))
        values.append(float(vals[r - before]))
    frac = pos - ranks[0]
    return values[0] + (values[1] - values[0]) * frac


@dataclass
class MatchResult:
    """Pivot pairs (indices into the matched rows), their CSLS scores, and the threshold used."""

    pairs: np.ndarray  # (p, 2) int64
    scores: np.ndarray  # (p,) float32
    threshold: float


def csls_threshold_matching(Fs: np.ndarray, Ft: np.ndarray, *, q: float = 0.5, k: int = 1, knn: int = 10,
                            variant: str = "paper", mutual: bool = False) -> MatchResult:
    """Each source keeps its top-k CSLS targets with c_ij >= the q-quantile threshold (WALIP step 1).

    ``mutual`` (ours, off by default) keeps only pairs whose target also has the source as its own best
    CSLS match (mutual nearest neighbours, methods.md): fewer pivots, measured more precise."""
    _check_variant(variant)
    if not 0.0 <= q <= 1.0:
        raise InvalidInput(f"quantile q must be in [0, 1], got {q}")
    Fs = np.ascontiguousarray(Fs, dtype=np.float32)
    Ft = np.ascontiguousarray(Ft, dtype=np.float32)
    if len(Fs) == 0 or len(Ft) == 0:
        return MatchResult(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32), float("nan"))
    k = min(k, len(Ft))
    r_src = retrieval.knn_mean_similarity(Fs, Ft, min(knn, len(Ft)))  # r_T(x)
    r_tgt = retrieval.knn_mean_similarity(Ft, Fs, min(knn, len(Fs)))  # r_S(y)
    scores, idx = retrieval.csls_topk(Fs, Ft, k, r_target=r_tgt, r_query=r_src)
    if variant == "paper":
        thr = csls_all_scores_quantile(Fs, Ft, r_src.astype(np.float32), r_tgt.astype(np.float32), q)
    else:
        thr = float(np.quantile(scores, q))
    keep = scores >= thr
    if mutual:
        _, back = retrieval.csls_topk(Ft, Fs, 1, r_target=r_src, r_query=r_tgt)
        keep &= back[idx, 0] == np.arange(len(Fs))[:, None]
    src = np.broadcast_to(np.arange(len(Fs))[:, None], idx.shape)
    pairs = np.stack([src[keep], idx[keep]], axis=1).astype(np.int64)
    return MatchResult(pairs, scores[keep].astype(np.float32), thr)


@dataclass
class PivotResult:
    """Pivot pairs between the original word lists plus the filtering statistics."""

    pairs: np.ndarray  # (p, 2) int64 indices into the source / target word lists
    scores: np.ndarray  # (p,) float32 CSLS scores
    threshold: float
    src_kept: np.ndarray  # indices of source words passing the visual-word filter
    tgt_kept: np.ndarray


def fingerprint_pivots(src_fp: np.ndarray, tgt_fp: np.ndarray, *, q: float = 0.5, k: int = 1, knn: int = 10,
                       sparsify_quantile: float = 0.9, variant: str = "paper",
                       filter_visual: bool = True, mutual: bool = False, visual_quantile: float = 0.5) -> PivotResult:
    """Filter visual words, sparsify, CSLS-match: WALIP's initial pivots (methods.md, WALIP step 1)."""
    _check_variant(variant)
    src_kept = np.flatnonzero(visual_word_mask(src_fp, visual_quantile)) if filter_visual else np.arange(len(src_fp))
    tgt_kept = np.flatnonzero(visual_word_mask(tgt_fp, visual_quantile)) if filter_visual else np.arange(len(tgt_fp))
    Fs = sparsify_fingerprints(src_fp[src_kept], sparsify_quantile, variant)
    Ft = sparsify_fingerprints(tgt_fp[tgt_kept], sparsify_quantile, variant)
    match = csls_threshold_matching(Fs, Ft, q=q, k=k, knn=knn, variant=variant, mutual=mutual)
    pairs = np.stack([src_kept[match.pairs[:, 0]], tgt_kept[match.pairs[:, 1]]], axis=1).astype(np.int64)
    return PivotResult(pairs, match.scores, match.threshold, src_kept.astype(np.int64), tgt_kept.astype(np.int64))


def pivot_precision(pairs: np.ndarray, gold: np.ndarray) -> dict[str, float | int]:
    """WALIP's initial matching accuracy: correct pivots / pivots whose source has a gold translation."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    gold = np.asarray(gold, dtype=np.int64).reshape(-1, 2)
    if len(gold) == 0:
        return {"precision": float("nan"), "n_pivots": len(pairs), "n_evaluable": 0, "n_correct": 0}
    width = int(max(pairs[:, 1].max(initial=0), gold[:, 1].max(initial=0))) + 1
    gold_keys = np.unique(gold[:, 0] * width + gold[:, 1])
    evaluable = np.isin(pairs[:, 0], np.unique(gold[:, 0]))
    correct = np.isin(pairs[:, 0] * width + pairs[:, 1], gold_keys) & evaluable
    n_eval = int(evaluable.sum())
    return {
        "precision": float(correct.sum() / n_eval) if n_eval else float("nan"),
        "n_pivots": int(len(pairs)),
        "n_evaluable": n_eval,
        "n_correct": int(correct.sum()),
    }


FREQUENCY_BANDS = ((0, 1000), (1000, 5000), (5000, 20000), (20000, None))


def pivot_precision_bands(pairs: np.ndarray, gold: np.ndarray,
                          bands: tuple[tuple[int, int | None], ...] = FREQUENCY_BANDS) -> list[dict[str, float | int | str]]:
    """:func:`pivot_precision` per frequency band of the source word (its row = its frequency rank), each with
    a 95 % Wilson score interval of the precision (the pivots are few: the interval is the honest number)."""
    from services.sentences.evaluation import wilson

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = []
    for lo, hi in (*bands, (0, None)):
        sel = (pairs[:, 0] >= lo) & (pairs[:, 0] < (hi if hi is not None else np.iinfo(np.int64).max))
        m = pivot_precision(pairs[sel], gold)
        low, high = wilson(m["n_correct"], m["n_evaluable"]) if m["n_evaluable"] else (float("nan"), float("nan"))
        out.append({"band": f"{lo}-{hi if hi is not None else ''}" if (lo, hi) != (0, None) else "all", **m,
                    "ci_low": low, "ci_high": high})
    return out
