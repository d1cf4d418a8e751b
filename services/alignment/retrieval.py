"""Exact nearest-neighbour and CSLS retrieval, chunked (methods.md, "CSLS retrieval", "Mutual nearest neighbours").

Rows of every input are assumed unit-normalised, so inner product = cosine. Queries are processed
in chunks, so memory stays bounded (no dense vocab×vocab matrix) even for 200k × 200k. The top-k
search runs on FAISS ``IndexFlatIP`` (exact) on CPU, on torch when a CUDA GPU is present, with a
plain numpy fallback. CSLS is exact through the augmented-vector trick of methods.md: targets get
an extra coordinate −r_S(y)/2 and queries a 1, so one inner-product search returns
cos(x, y) − r_S(y)/2 = CSLS/2 (+ r_T(x)/2, constant per query).

``mutual_nn`` (backend ``"auto"``) sweeps the score matrix in blocks (services/alignment/sweep.py): one
n × m × d product for NN, two for CSLS, instead of the reference's two and four searches; a named backend
keeps those searches.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from services.alignment.sweep import mutual_nn_fused, score_blocks
from services.errors import InvalidInput

__all__ = [
    "QUERY_CHUNK_ROWS",
    "available_threads",
    "csls_topk",
    "knn_mean_similarity",
    "mutual_nn",
    "mutual_nn_fused",
    "nn_topk",
    "score_blocks",
    "torch_device",
]

# Queries per search call; with FAISS's own blocking this keeps temporaries to tens of MB.
QUERY_CHUNK_ROWS = 8192
# Score-matrix elements per chunk on the torch / numpy paths (2^26 float32 = 256 MB).
_MAX_CHUNK_ELEMENTS = 1 << 26
_BACKENDS = ("auto", "faiss", "torch", "numpy")


@lru_cache(maxsize=1)
def available_threads() -> int:
    """CPU cores this process may use (affinity mask and cgroup quota, not the host's count)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return max(1, n)


@lru_cache(maxsize=1)
def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return None
    # FAISS defaults to the host's core count; inside containers that oversubscribes the CPU.
    faiss.omp_set_num_threads(available_threads())
    return faiss


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def torch_device(device: str | None = "auto"):
    """The torch device of the fast paths: ``"auto"``/None = CUDA when present, else CPU; or a device name."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise InvalidInput(f"unknown retrieval backend {backend!r}; known: {', '.join(_BACKENDS)}")
    if backend != "auto":
        return backend
    if _cuda_available():
        return "torch"
    return "faiss" if _faiss() is not None else "numpy"


def _as_f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_pair(Q: np.ndarray, T: np.ndarray) -> None:
    if Q.ndim != 2 or T.ndim != 2:
        raise InvalidInput(f"retrieval needs 2-d arrays, got {Q.shape} and {T.shape}")
    if Q.shape[1] != T.shape[1]:
        raise InvalidInput(
            f"dimension mismatch: queries are {Q.shape[1]}-d, targets {T.shape[1]}-d",
            detail={"query_dim": int(Q.shape[1]), "target_dim": int(T.shape[1])},
        )


def _topk_biased(
    Q: np.ndarray,
    T: np.ndarray,
    k: int,
    target_bias: np.ndarray | None,
    backend: str,
    chunk_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of q·t + target_bias[t] over all rows t of T, per row q of Q (descending)."""
    _check_pair(Q, T)
    n, m = Q.shape[0], T.shape[0]
    k = min(int(k), m)
    scores = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    if n == 0 or k <= 0:
        return scores, idx
    backend = _resolve_backend(backend)
    if backend == "faiss":
        faiss = _faiss()
        T32 = _as_f32(T)
        if target_bias is not None:
            T32 = np.ascontiguousarray(np.hstack([T32, np.asarray(target_bias, dtype=np.float32)[:, None]]))
        index = faiss.IndexFlatIP(T32.shape[1])
        index.add(T32)
        del T32
        for start in range(0, n, chunk_rows):
            q = _as_f32(Q[start : start + chunk_rows])
            if target_bias is not None:
                q = np.ascontiguousarray(np.hstack([q, np.ones((q.shape[0], 1), dtype=np.float32)]))
            s, i = index.search(q, k)
            scores[start : start + len(q)] = s
            idx[start : start + len(q)] = i
        return scores, idx
    rows = max(1, min(chunk_rows, _MAX_CHUNK_ELEMENTS // max(m, 1)))
    if backend == "torch":
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        Tt = torch.from_numpy(_as_f32(T)).to(device)
        bias_t = None if target_bias is None else torch.from_numpy(np.asarray(target_bias, dtype=np.float32)).to(device)
        with torch.no_grad():
            for start in range(0, n, rows):
                q = torch.from_numpy(_as_f32(Q[start : start + rows])).to(device)
                sim = q @ Tt.T
                if bias_t is not None:
                    sim += bias_t
                s, i = torch.topk(sim, k, dim=1)
                scores[start : start + len(q)] = s.cpu().numpy()
                idx[start : start + len(q)] = i.cpu().numpy()
        return scores, idx
    T32 = _as_f32(T)
    bias = None if target_bias is None else np.asarray(target_bias, dtype=np.float32)
    for start in range(0, n, rows):
        sim = _as_f32(Q[start : start + rows]) @ T32.T
        if bias is not None:
            sim += bias
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), sim.shape).copy()
        part_scores = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        scores[start : start + len(sim)] = np.take_along_axis(part_scores, order, axis=1)
        idx[start : start + len(sim)] = np.take_along_axis(part, order, axis=1)
    return scores, idx


def nn_topk(
    Q: np.ndarray, T: np.ndarray, k: int, *, backend: str = "auto", chunk_rows: int = QUERY_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine neighbours in T of each row of Q: (scores (n, k) float32, idx (n, k) int64), best first."""
    return _topk_biased(Q, T, k, None, backend, chunk_rows)


def knn_mean_similarity(
    Q: np.ndarray, T: np.ndarray, k: int = 10, *, backend: str = "auto", chunk_rows: int = QUERY_CHUNK_ROWS
) -> np.ndarray:
    """Mean cosine of each row of Q to its k nearest rows of T (r_T / r_S of CSLS, methods.md)."""
    if T.shape[0] == 0:
        raise InvalidInput("cannot compute neighbourhood similarity against an empty set")
    scores, _ = nn_topk(Q, T, k, backend=backend, chunk_rows=chunk_rows)
    return scores.mean(axis=1, dtype=np.float64).astype(np.float32)


def csls_topk(
    Q: np.ndarray,
    T: np.ndarray,
    k: int,
    r_target: np.ndarray,
    r_query: np.ndarray | None = None,
    *,
    backend: str = "auto",
    chunk_rows: int = QUERY_CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact CSLS top-k: score = 2 cos(q, t) − r_target[t] (− r_query[q] when given), best first."""
    r_target = np.asarray(r_target, dtype=np.float32)
    if r_target.shape != (T.shape[0],):
        raise InvalidInput(f"r_target must have one value per target row ({T.shape[0]}), got shape {r_target.shape}")
    half, idx = _topk_biased(Q, T, k, -0.5 * r_target, backend, chunk_rows)
    scores = 2.0 * half
    if r_query is not None:
        r_query = np.asarray(r_query, dtype=np.float32)
        if r_query.shape != (Q.shape[0],):
            raise InvalidInput(f"r_query must have one value per query row ({Q.shape[0]}), got shape {r_query.shape}")
        scores -= r_query[:, None]
    return scores.astype(np.float32, copy=False), idx


def mutual_nn(
    XW: np.ndarray,
    Y: np.ndarray,
    *,
    retrieval: str = "csls",
    knn: int = 10,
    max_src: int | None = None,
    max_tgt: int | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest-neighbour pairs among the first max_src / max_tgt rows (methods.md, "Mutual nearest neighbours").

    Returns (pairs (p, 2) int64 of (source row, target row), scores (p,) float32), sorted by
    decreasing score (the full CSLS 2cos − r_T − r_S, or the cosine for ``retrieval="nn"``).
    ``backend="auto"``: one fused sweep (:func:`mutual_nn_fused`); a named backend: the reference's two
    searches per direction with that search backend.
    """
    if retrieval not in ("csls", "nn"):
        raise InvalidInput(f"unknown retrieval {retrieval!r}; use 'csls' or 'nn'")
    _check_pair(XW, Y)
    Xs = XW[: max_src] if max_src is not None else XW
    Ys = Y[: max_tgt] if max_tgt is not None else Y
    if len(Xs) == 0 or len(Ys) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    if backend == "auto":  # one sweep (torch: CUDA when present)
        fwd, bwd, fwd_s, _ = mutual_nn_fused(Xs, Ys, retrieval=retrieval, knn=knn)
        src = np.arange(len(Xs), dtype=np.int64)
        mutual = bwd[fwd] == src
        pairs = np.stack([src[mutual], fwd[mutual]], axis=1).astype(np.int64)
        scores = fwd_s[mutual].astype(np.float32)
        order = np.lexsort((pairs[:, 0], -scores))
        return pairs[order], scores[order]
    if retrieval == "csls":
        r_src = knn_mean_similarity(Xs, Ys, knn, backend=backend)  # r_T(x): x's neighbourhood among targets
        r_tgt = knn_mean_similarity(Ys, Xs, knn, backend=backend)  # r_S(y): y's neighbourhood among sources
        fwd_s, fwd = csls_topk(Xs, Ys, 1, r_tgt, r_src, backend=backend)
        _, bwd = csls_topk(Ys, Xs, 1, r_src, r_tgt, backend=backend)
    else:
        fwd_s, fwd = nn_topk(Xs, Ys, 1, backend=backend)
        _, bwd = nn_topk(Ys, Xs, 1, backend=backend)
    fwd = fwd[:, 0]
    src = np.arange(len(Xs), dtype=np.int64)
    mutual = bwd[fwd, 0] == src
    pairs = np.stack([src[mutual], fwd[mutual]], axis=1).astype(np.int64)
    scores = fwd_s[mutual, 0].astype(np.float32)
    order = np.lexsort((pairs[:, 0], -scores))
    return pairs[order], scores[order]

