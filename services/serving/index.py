"""FAISS indexes over a target space, augmented for exact CSLS (methods.md, "CSLS retrieval").

One index per target space holds the unit target rows y plus one extra coordinate per source
space mapped into it: −r_S(y) for that source. A query searches with

- NN:   [x, 0, …, 0]                 -> score cos(x, y)
- CSLS: [2x, 0, …, 1 (its column), …] -> score 2 cos(x, y) − r_S(y)

so exact CSLS is one inner-product search, and all sources share one copy of the targets.
r_T(x) is constant per query and dropped (methods.md: "For ranking the targets of one query,
r_T(x) is a constant"), so reported CSLS scores are 2 cos − r_S.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from services.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["TargetIndex", "build_faiss_index", "faiss_gpu_count", "INDEX_TYPES", "search_threads"]

INDEX_TYPES = ("flat", "hnsw", "ivf")
# Below this many queries one OpenMP thread is fastest (thread start-up dominates a 50k scan).
_PARALLEL_MIN_QUERIES = 32
_HNSW_M = 32
_HNSW_EF_SEARCH = 128
_GPU_RESOURCES: list = []


# FAISS (1.15) scans with its SIMD loop while n_queries * d < distance_compute_blas_threshold
# (default 128,000: up to ~425 queries at d = 301) and with one BLAS GEMM above. Measured on the
# serving box (50k x 301 flat, one thread): the loop costs ~2.2 ms per query at any batch size,
# the GEMM ~1.8 ms/query at 8 queries, 0.5 at 64, 0.4 at 256+ (but is slower for 1-3 queries).
# 2,500 switches at ~8 queries for d ≈ 300 (5 at d = 512): 4-5x faster mid-size batches.
BLAS_THRESHOLD = 2500


@lru_cache(maxsize=1)
def _faiss():
    import faiss

    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD  # process-wide; see above
    return faiss


@lru_cache(maxsize=1)
def faiss_gpu_count() -> int:
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # pragma: no cover - CPU build
        return 0


@lru_cache(maxsize=1)
def _cpu_threads() -> int:
    try:
        from services.alignment.retrieval import available_threads

        return available_threads()
    except ImportError:  # pragma: no cover - alignment engine absent
        return max(1, len(os.sched_getaffinity(0)))


def search_threads(n_queries: int) -> int:
    """OpenMP threads for a search of ``n_queries`` rows (1 for the single-word hot path)."""
    return 1 if n_queries < _PARALLEL_MIN_QUERIES else _cpu_threads()


def build_faiss_index(matrix: np.ndarray, *, index_type: str = "flat", storage_dtype: str = "float32",
                      use_gpu: bool | None = None) -> Any:
    """An inner-product FAISS index over ``matrix`` rows (flat exact; hnsw/ivf approximate)."""
    faiss = _faiss()
    if index_type not in INDEX_TYPES:
        raise InvalidInput(f"unknown index type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
    data = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = data.shape
    if index_type == "flat":
        if storage_dtype == "float16":
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexFlatIP(d)
    elif index_type == "hnsw":
        if storage_dtype == "float16":
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, _HNSW_M, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(d, _HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = _HNSW_EF_SEARCH
    else:
        # ~4 sqrt(n) lists, but at least 39 training points per list (FAISS's own floor).
        nlist = max(1, min(4096, int(4 * np.sqrt(max(n, 1))), n // 39))
        coding = "SQfp16" if storage_dtype == "float16" else "Flat"
        index = faiss.index_factory(d, f"IVF{nlist},{coding}", faiss.METRIC_INNER_PRODUCT)  # owns its quantizer
        index.train(data)
        faiss.extract_index_ivf(index).nprobe = max(1, nlist // 8)
    if index_type != "ivf" and storage_dtype == "float16":
        index.train(data)
    index.add(data)
    if use_gpu is None:
        use_gpu = faiss_gpu_count() > 0
    if use_gpu and index_type in ("flat", "ivf") and faiss_gpu_count() > 0:  # pragma: no cover - GPU only
        if not _GPU_RESOURCES:
            _GPU_RESOURCES.append(faiss.StandardGpuResources())  # must outlive every GPU index
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES[0], 0, index)
    return index


def _index_bytes(index: Any, n: int, d: int, storage_dtype: str) -> int:
    per = 2 if storage_dtype == "float16" else 4
    extra = 0
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        extra = int(n * _HNSW_M * 2 * 4)  # neighbour lists, level 0 dominates
    return int(n * d * per + extra)


@dataclass(eq=False)
class TargetIndex:
    """An immutable augmented index over one target space's (possibly transformed) rows.

    ``columns`` maps a source key (usually the source language) to its −r_S coordinate. Updating
    r_S builds a new TargetIndex (:meth:`with_column`), so searches never see a half-built index.
    """

    lang: str
    targets: np.ndarray  # (m, d) unit rows, float32 or float16
    columns: dict[str, int]
    r_source: np.ndarray  # (m, len(columns)) float32, r_S per source column (0 until computed)
    index_type: str = "flat"
    storage_dtype: str = "float32"
    use_gpu: bool | None = None
    index: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = build_faiss_index(self.augmented(), index_type=self.index_type,
                                           storage_dtype=self.storage_dtype, use_gpu=self.use_gpu)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, lang: str, targets: np.ndarray, sources: list[str], **kw: Any) -> "TargetIndex":
        r = np.zeros((targets.shape[0], len(sources)), dtype=np.float32)
        return cls(lang, targets, {s: i for i, s in enumerate(sources)}, r, **kw)

    def augmented(self) -> np.ndarray:
        m, d = self.targets.shape
        out = np.empty((m, d + self.r_source.shape[1]), dtype=np.float32)
        out[:, :d] = self.targets
        out[:, d:] = -self.r_source
        return out

    def with_column(self, source: str, r_s: np.ndarray) -> "TargetIndex":
        """A new index with ``source``'s r_S set (the column is added when new)."""
        columns = dict(self.columns)
        r = self.r_source
        if source not in columns:
            columns[source] = r.shape[1]
            r = np.hstack([r, np.zeros((r.shape[0], 1), dtype=np.float32)])
        else:
            r = r.copy()
        r[:, columns[source]] = np.asarray(r_s, dtype=np.float32)
        return TargetIndex(self.lang, self.targets, columns, r, self.index_type, self.storage_dtype, self.use_gpu)

    @property
    def size(self) -> int:
        return int(self.targets.shape[0])

    @property
    def dim(self) -> int:
        return int(self.targets.shape[1])

    @property
    def nbytes(self) -> int:
        return _index_bytes(self.index, self.size, self.dim + self.r_source.shape[1], self.storage_dtype) \
            + int(self.r_source.nbytes)

    def query_matrix(self, Q: np.ndarray, column: int | None) -> np.ndarray:
        """Augmented queries: [x, 0…] for NN (column None), [2x, e_column] for CSLS."""
        n, d = Q.shape
        out = np.zeros((n, d + self.r_source.shape[1]), dtype=np.float32)
        if column is None:
            out[:, :d] = Q
        else:
            out[:, :d] = Q
            out[:, :d] *= 2.0
            out[:, d + column] = 1.0
        return out

    def search(self, Q: np.ndarray, k: int, column: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query row, best first: one FAISS search over all rows.

        Large batches are cut into one slice per core, searched concurrently (FAISS releases the
        GIL) with one OpenMP thread each: OpenMP teams spin-wait, and on a shared, busy machine a
        preempted team member stalls the whole search (measured 4-6x slower than one thread).
        """
        k = min(int(k), self.size)
        q = self.query_matrix(np.asarray(Q, dtype=np.float32), column)
        threads = search_threads(q.shape[0])
        if threads <= 1 or self.use_gpu:
            return _search_one_thread(self.index, q, k)
        parts = list(_pool(threads).map(lambda part: _search_one_thread(self.index, part, k),
                                        np.array_split(q, threads)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _search_one_thread(index: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    _faiss().omp_set_num_threads(1)  # per-thread OpenMP setting: no race with other requests
    return index.search(q, k)


@lru_cache(maxsize=4)
def _pool(threads: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(threads, thread_name_prefix="vislex-search")
