"""Bilingual lexicon induction (BLI) evaluation (methods.md, "BLI evaluation").

For every distinct test source word, all targets of the full target vocabulary are ranked (NN:
cosine; CSLS: 2 cos(x, y) − r_S(y), r_T(x) being constant per query) and the rank of its best
gold translation is computed exactly; P@k = fraction of queries with a gold target in the top k,
MRR = mean of 1 / that rank. Ties with the best gold score count in its favour.
"""

from __future__ import annotations

import numpy as np

from services.alignment.retrieval import knn_mean_similarity
from services.errors import InvalidInput

__all__ = ["bli_evaluate", "gold_matrix", "paired_comparison", "ranks_of_gold"]

# Score-matrix elements per query chunk (2^24 float32 = 64 MB).
_MAX_CHUNK_ELEMENTS = 1 << 24


def _unit_rows(a: np.ndarray) -> np.ndarray:
    from services.alignment.vectors import row_norms

    a = np.asarray(a, dtype=np.float32)
    norms = row_norms(a)
    norms[norms == 0] = 1
    return a / norms


def gold_matrix(test_pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct sources (q,), gold targets (q, g) padded with -1) from (source, target) pairs."""
    pairs = np.unique(np.asarray(test_pairs, dtype=np.int64).reshape(-1, 2), axis=0)  # sorted by source
    sources, starts, counts = np.unique(pairs[:, 0], return_index=True, return_counts=True)
    gold = np.full((len(sources), int(counts.max()) if len(counts) else 0), -1, dtype=np.int64)
    group = np.repeat(np.arange(len(sources)), counts)
    position = np.arange(len(pairs)) - np.repeat(starts, counts)
    gold[group, position] = pairs[:, 1]
    return sources, gold


def ranks_of_gold(queries: np.ndarray, tgt: np.ndarray, gold: np.ndarray, target_bias: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each query's best gold target among all targets by q·t (+ target_bias), chunked."""
    n, m = len(queries), len(tgt)
    ranks = np.empty(n, dtype=np.int64)
    rows = max(1, min(4096, _MAX_CHUNK_ELEMENTS // max(m, 1)))
    T = np.ascontiguousarray(tgt, dtype=np.float32)
    has_gold = gold >= 0
    safe_gold = np.where(has_gold, gold, 0)
    for start in range(0, n, rows):
        scores = np.ascontiguousarray(queries[start : start + rows], dtype=np.float32) @ T.T
        if target_bias is not None:
            scores += target_bias
        # Gather gold scores from the same matrix so a gold target never outranks itself by rounding.
        g = np.take_along_axis(scores, safe_gold[start : start + rows], axis=1)
        g[~has_gold[start : start + rows]] = -np.inf
        best = g.max(axis=1)
        ranks[start : start + rows] = 1 + (scores > best[:, None]).sum(axis=1)
    return ranks


def bli_evaluate(
    mapped_src: np.ndarray,
    tgt: np.ndarray,
    test_pairs: np.ndarray,
    *,
    retrieval: str = "csls",
    knn: int = 10,
    n_oov_sources: int = 0,
    return_ranks: bool = False,
) -> dict:
    """P@1/5/10, MRR (fractions in [0, 1]) and coverage of BLI over the full target vocabulary (methods.md, "BLI evaluation").

    ``test_pairs`` are in-vocabulary (source row, target row) pairs; ``n_oov_sources`` counts test
    source words that had no in-vocabulary pair (they lower coverage, not precision). Rows are
    re-normalised to unit length, so non-orthogonal mappings are scored by cosine. For CSLS,
    r_S(y) is the mean cosine of y to its ``knn`` nearest among ALL mapped source vectors.
    ``return_ranks`` adds ``sources`` (the distinct query rows, sorted) and ``ranks`` (each one's 1-based gold
    rank) as arrays, for paired comparisons of two mappings on the same queries.
    """
    if retrieval not in ("csls", "nn"):
        raise InvalidInput(f"unknown retrieval {retrieval!r}; use 'csls' or 'nn'")
    test_pairs = np.asarray(test_pairs, dtype=np.int64).reshape(-1, 2)
    if len(test_pairs) == 0:
        raise InvalidInput("no test pairs in vocabulary: nothing to evaluate")
    if mapped_src.shape[1] != tgt.shape[1]:
        raise InvalidInput(f"dimension mismatch: mapped source is {mapped_src.shape[1]}-d, target {tgt.shape[1]}-d")
    if test_pairs[:, 0].max() >= len(mapped_src) or test_pairs[:, 1].max() >= len(tgt) or test_pairs.min() < 0:
        raise InvalidInput("test pairs index rows outside the vocabularies")
    Y = _unit_rows(tgt)
    sources, gold = gold_matrix(test_pairs)
    # Rows are normalised one by one: NN needs only the query rows; CSLS's r_S reads every mapped source.
    X = _unit_rows(mapped_src) if retrieval == "csls" else None
    queries = X[sources] if X is not None else _unit_rows(np.asarray(mapped_src)[sources])
    if retrieval == "csls":
        r_src = knn_mean_similarity(Y, X, knn)
        # 2 cos − r_S ranks like cos − r_S / 2.
        ranks = ranks_of_gold(queries, Y, gold, target_bias=-0.5 * r_src)
    else:
        ranks = ranks_of_gold(queries, Y, gold)
    n_queries = len(sources)
    n_total = n_queries + int(n_oov_sources)
    result = {
        "p@1": float(np.mean(ranks <= 1)),
        "p@5": float(np.mean(ranks <= 5)),
        "p@10": float(np.mean(ranks <= 10)),
        "mrr": float(np.mean(1.0 / ranks)),
        "coverage": float(n_queries / n_total),
        "n_queries": int(n_queries),
        "n_test_sources": int(n_total),
        "retrieval": retrieval,
    }
    if return_ranks:
        result.update(sources=sources, ranks=ranks)
    return result


def paired_comparison(before: np.ndarray, after: np.ndarray, *, resamples: int = 4000, seed: int = 0) -> dict:
    """Two mappings scored on the same queries (per-query hits, e.g. ``ranks == 1``): queries won and lost,
    the P@1 difference in points with a paired bootstrap 95 % interval, and the two-sided sign-test p-value.

    A difference of a few queries out of ~1,000 is what re-running with another seed moves; the interval
    says whether a gain is distinguishable from none.
    """
    from scipy.stats import binomtest

    before = np.asarray(before, dtype=bool)
    after = np.asarray(after, dtype=bool)
    if before.shape != after.shape or before.ndim != 1 or len(before) == 0:
        raise InvalidInput(f"paired comparison needs two equal-length non-empty hit vectors, got {before.shape} and {after.shape}")
    diff = after.astype(np.int8) - before.astype(np.int8)
    won, lost = int((diff > 0).sum()), int((diff < 0).sum())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):  # 500 resamples at a time bounds memory for large query sets
        idx = rng.integers(0, len(diff), size=(min(500, resamples - start), len(diff)))
        means[start:start + len(idx)] = diff[idx].mean(axis=1)
    lo, hi = np.percentile(100 * means, [2.5, 97.5])
    return {"delta": 100 * float(diff.mean()), "won": won, "lost": lost, "ci_low": float(lo), "ci_high": float(hi),
            "p_sign": float(binomtest(won, won + lost).pvalue) if won + lost else 1.0, "n_queries": int(len(diff))}
