"""Precomputed translation tables: the top-K targets of every source word of a pair.

A served vocabulary is closed (an out-of-vocabulary word is a 404), so the answer to every
possible query of a pair is finite: for each source row, its top-K targets under NN and under
exact CSLS. Computing them is the same exact search the request path runs (TargetIndex.search,
methods.md "CSLS retrieval": augmented vectors, r_S precomputed), done once per mapping version
in chunks; afterwards a lookup with k ≤ K is two row gathers instead of a 50k-row scan, and a
batch of a thousand words no longer costs a thousand scans. Tables belong to one PairState (one
mapping version and its r_S), so a new version can never be answered from an old table.

Memory: n_src × K × 8 bytes per pair and retrieval (50k words, K = 10: 4 MB).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["TranslationTable", "build_table", "TABLE_CHUNK_ROWS"]

# Rows per search call: large enough for FAISS's BLAS path, small enough to stop promptly.
TABLE_CHUNK_ROWS = 4096


@dataclass(frozen=True, eq=False)
class TranslationTable:
    """Top-``k`` (scores, target rows) per source row, best first; rows are -1 where fewer exist."""

    k: int
    scores: np.ndarray  # (n_src, k) float32
    rows: np.ndarray  # (n_src, k) int32

    @property
    def nbytes(self) -> int:
        return int(self.scores.nbytes + self.rows.nbytes)

    def top(self, source_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the first ``k`` ≤ self.k entries of each given source row."""
        return self.scores[source_rows, :k], self.rows[source_rows, :k]


def build_table(search, queries: np.ndarray, k: int, *, chunk_rows: int = TABLE_CHUNK_ROWS,
                stop: threading.Event | None = None) -> TranslationTable | None:
    """Run ``search(Q, k) -> (scores, rows)`` over ``queries`` in chunks; None when ``stop`` is set first."""
    n = int(queries.shape[0])
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    rows = np.full((n, k), -1, dtype=np.int32)
    for start in range(0, n, chunk_rows):
        if stop is not None and stop.is_set():
            return None
        s, r = search(queries[start:start + chunk_rows], k)
        width = s.shape[1]  # a target space smaller than k gives fewer columns
        scores[start:start + len(s), :width] = s
        rows[start:start + len(s), :width] = r
    return TranslationTable(int(k), scores, rows)
