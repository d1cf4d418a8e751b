"""Exact sweeps over a score matrix X Yᵀ in blocks: mutual NN and mutual CSLS with the fewest products (issue 18).

The reference builds a mutual-NN dictionary from two FAISS searches (NN) or four (CSLS: r_T, r_S, forward,
backward), each an n × m × d product. Here:

- NN: one sweep; each block gives its rows' maxima and updates a running maximum per column.
- CSLS (methods.md, "CSLS retrieval"): two sweeps. The first gives each row's top-K (r_T(x), mean cosine
  to its K nearest targets) and updates a running top-K per column (r_S(y)); the second scores each block
  as the full CSLS 2 cos − r_T(x) − r_S(y) (straight from the product of augmented vectors) and takes row
  and column maxima — a row's best target under 2 cos − r_S and a column's best source under 2 cos − r_T,
  as the reference ranks them. The second sweep
  can be limited to the rows whose forward neighbour is wanted and the columns whose backward one is
  (L1's reference rule: the first 10k of each side, with r over the whole vocabularies).

Blocks are numpy BLAS products on CPU (OpenBLAS measured 85 vs 55 GFLOPS for torch's MKL on one core of the
AMD development box) reduced with torch (``torch.from_numpy``: no copy), or torch on CUDA. Results equal the
reference searches up to float rounding (ties may break differently).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FUSED_BLOCK_ELEMENTS", "FUSED_MIN_ROWS", "mutual_nn_fused", "score_blocks"]

# Elements of one score block (2^22 float32 = 16 MB: near the caches, and memory stays flat at any size) ...
FUSED_BLOCK_ELEMENTS = 1 << 22
# ... but at least this many rows per block: every product packs all of T again, so thinner blocks spend more
# of their time copying it (20k x 20k x 300 sweep, two GEMM threads, quiet 2-core box: 1.92 s at 256 rows,
# 1.62 s at 512, 1.71 s at 1,024).
FUSED_MIN_ROWS = 512
# Tests set this to run the CUDA code path (torch products) on CPU tensors.
TORCH_BLOCKS_ON_CPU = False


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def score_blocks(Q: np.ndarray, T: np.ndarray, *, device="auto", block_elements: int | None = None,
                 unit_rows: bool = False):
    """Yield ``(start, Q[start:start + b] Tᵀ)`` over row blocks of Q, as float32 torch tensors on ``device``.

    Exact float32 products: numpy's BLAS on CPU, written into two reused buffers (the next block is computed
    while the caller consumes this one: consume a block before asking for the next), torch on CUDA. Blocks hold about ``block_elements`` scores (at least FUSED_MIN_ROWS rows).
    ``unit_rows``: each block of Q is scaled to unit rows first (cosines without a normalised copy of Q).
    """
    import torch

    from services.alignment.retrieval import torch_device

    dev = torch_device(device)
    n, m = Q.shape[0], T.shape[0]
    if n == 0:
        return
    budget = FUSED_BLOCK_ELEMENTS if block_elements is None else block_elements
    rows = max(1, min(n, max(FUSED_MIN_ROWS, budget // max(m, 1))))
    if dev.type == "cpu" and not TORCH_BLOCKS_ON_CPU:
        Q32, T32 = _f32(Q), _f32(T)
        pool, threads = _gemm_pool()
        starts = list(range(0, n, rows))
        if pool is None:
            buffer = np.empty((rows, m), dtype=np.float32)
            for start in starts:
                q = _unit_block(Q32[start : start + rows]) if unit_rows else Q32[start : start + rows]
                np.matmul(q, T32.T, out=buffer[: len(q)])
                yield start, torch.from_numpy(buffer[: len(q)])
            return
        # Two buffers: the GEMM threads compute the next block while the caller reduces this one, so the
        # caller's single-threaded numpy reductions no longer leave a core idle (best of three on the 2-core box:
        # 20k x 20k mutual CSLS 4.75 s against 4.91 s without; InstaMap's shift of 20k rows over 8k anchors
        # 1.41 s against 1.74 s). A block stays valid until the next one is asked for.
        buffers = [np.empty((rows, m), dtype=np.float32) for _ in range(min(2, len(starts)))]

        def product(start: int, out: np.ndarray, lo: int, hi: int) -> None:
            q = Q32[start + lo : start + hi]
            np.matmul(_unit_block(q) if unit_rows else q, T32.T, out=out[lo:hi])

        def submit(i: int):
            start = starts[i]
            b = min(rows, n - start)
            out = buffers[i % len(buffers)][:b]
            bounds = np.linspace(0, b, threads + 1).astype(int) if b >= 2 * threads else np.array([0, b])
            return out, [pool.submit(product, start, out, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]

        with _BLAS_LIMITS[0].limit(limits=1, user_api="blas"):
            pending = submit(0)
            for i, start in enumerate(starts):
                out, futures = pending
                for f in futures:
                    f.result()
                if i + 1 < len(starts):
                    pending = submit(i + 1)
                yield start, torch.from_numpy(out)
        return
    Tt = torch.from_numpy(_f32(T)).to(dev)
    for start in range(0, n, rows):
        q = _f32(Q[start : start + rows])
        yield start, torch.from_numpy(_unit_block(q) if unit_rows else q).to(dev) @ Tt.T


def _unit_block(q: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return q / norms


_POOL: list = []
_BLAS_LIMITS: list = []


def _gemm_pool():
    """(thread pool, threads) for block products: one single-threaded BLAS call per core, from Python threads.

    numpy's OpenBLAS threads spin after each call and fight torch's OpenMP threads (the reductions that
    follow) for the cores: measured on the busy 2-core box, a CSLS sweep of 20k × 20k ran 18.6-23.2 s with
    one BLAS thread per call (BLAS limited to one thread only while the block is computed) against 28.4 s
    with OpenBLAS's own two threads.
    """
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        from services.alignment.retrieval import available_threads

        threads = available_threads()
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_LIMITS.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            threads = 1
        _POOL.append((ThreadPoolExecutor(threads, thread_name_prefix="vislex-gemm") if threads > 1 else None, threads))
    return _POOL[0]


class _ColumnBestNp:
    """_ColumnBest on CPU blocks in numpy: the maxima first (a values-only reduction), the argmax only over the
    columns a block improves -- all of them in the first blocks, a few hundred per block later (a column's best
    changes about ln(blocks) times). Measured on a 256 × 20,000 block: torch's ``max(dim=0)`` with indices
    7.0 ms, numpy's values-only ``max(axis=0)`` 1.6 ms."""

    def __init__(self, m: int):
        self.value = np.full(m, -np.inf, np.float32)
        self.index = np.zeros(m, dtype=np.int64)

    def update(self, S: np.ndarray, start: int) -> None:
        v = S.max(axis=0)
        cols = np.flatnonzero(v > self.value)  # strict: the first, lowest row keeps a tie
        if len(cols) == 0:
            return
        sub = S if len(cols) == S.shape[1] else S[:, cols]
        self.index[cols] = sub.argmax(axis=0) + start
        self.value[cols] = v[cols]


def _row_best_np(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's maximum and its first index (numpy's argmax: 1.4 ms on a 256 × 20,000 block against 5.7 ms
    for torch's ``max(dim=1)`` with indices)."""
    i = S.argmax(axis=1)
    return S[np.arange(len(S)), i], i


class _ColumnBest:
    """Running maximum and argmax per column over row blocks (the first, lowest row keeps a tie)."""

    def __init__(self, m: int, dev):
        import torch

        self.torch = torch
        self.value = torch.full((m,), -torch.inf, device=dev)
        self.index = torch.zeros(m, dtype=torch.long, device=dev)

    def update(self, S, start: int) -> None:
        v, i = S.max(dim=0)
        better = v > self.value
        self.value = self.torch.where(better, v, self.value)
        self.index = self.torch.where(better, i + start, self.index)


def _column_topk(S, col, k: int) -> None:
    """Merge block S's column top-k values into the running (k, m) ``col`` (best first), in place.

    Only entries above a column's current k-th best can enter: after the first blocks few do, and they are
    merged per column in a small padded matrix; blocks where many do (the first ones) take a plain top-k.
    """
    import torch

    m = S.shape[1]
    above = S > col[-1]
    count = int(above.sum())
    if count == 0:
        return
    if count > 2 * m:
        top = torch.topk(S, min(col.shape[0], S.shape[0]), dim=0).values
        col.copy_(torch.topk(torch.cat([col, top]), col.shape[0], dim=0).values)
        return
    rows, cols = above.nonzero(as_tuple=True)
    values = S[rows, cols]
    touched, inverse, counts = torch.unique(cols, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=S.device) - starts[inverse[order]]
    pad = torch.full((int(counts.max()), len(touched)), -torch.inf, device=S.device)
    pad[rank, inverse[order]] = values[order]
    col[:, touched] = torch.topk(torch.cat([col[:, touched], pad]), col.shape[0], dim=0).values


def _column_topk_np(S: np.ndarray, col: np.ndarray) -> None:
    """_column_topk on CPU: the merge of the few entries that enter runs in numpy (no thread-pool wake-ups).

    After the first blocks only a few hundred columns change per block: their columns are found from the
    block's column maxima (one values-only pass) and only they are compared and merged."""
    import torch

    k, m = col.shape
    entering = np.flatnonzero(S.max(axis=0) > col[-1])  # columns where some entry of this block enters
    if len(entering) == 0:
        return
    if len(entering) > m // 4:  # the first blocks: most columns change
        count = int(np.count_nonzero(S > col[-1]))
        if count > 2 * m:
            top = torch.topk(torch.from_numpy(S), min(k, S.shape[0]), dim=0).values.numpy()
            col[:] = torch.topk(torch.from_numpy(np.vstack([col, top])), k, dim=0).values.numpy()
            return
        entering = np.arange(m)
    sub = S if len(entering) == m else S[:, entering]
    c = sub.shape[1]
    flat = np.flatnonzero(sub > col[-1, entering])  # faster than np.nonzero on 2-d masks
    rows, cols = np.divmod(flat, c)
    values = sub.ravel()[flat]
    touched, inverse, counts = np.unique(cols, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(order)) - starts[inverse[order]]
    pad = np.full((int(counts.max()), len(touched)), -np.inf, dtype=np.float32)
    pad[rank, inverse[order]] = values[order]
    touched = entering[touched]
    merged = np.vstack([col[:, touched], pad])
    col[:, touched] = -np.partition(-merged, k - 1, axis=0)[:k] if len(merged) > k else merged
    col[:, touched] = -np.sort(-col[:, touched], axis=0)


def mutual_nn_fused(
    Xs: np.ndarray, Ys: np.ndarray, *, retrieval: str = "csls", knn: int = 10, device="auto",
    fwd_rows: int | None = None, bwd_cols: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Each row's best column and each column's best row of Xs Ysᵀ under NN or CSLS (module docstring); exact.

    Returns (forward best target of the first ``fwd_rows`` rows, backward best source of the first
    ``bwd_cols`` columns, forward scores (cosine, or the full CSLS 2 cos − r_T − r_S), stats). CSLS's r
    always run over all rows and columns. Rows are used as given (inner products).
    """
    import torch

    from services.alignment.retrieval import torch_device

    dev = torch_device(device)
    n, m = len(Xs), len(Ys)
    fr = n if fwd_rows is None else min(int(fwd_rows), n)
    bc = m if bwd_cols is None else min(int(bwd_cols), m)
    stats = {"sweeps": 1 if retrieval == "nn" else 2}
    with torch.no_grad():
        A, B, scale = Xs, Ys, 1.0
        if retrieval == "csls":
            kx, ky = min(int(knn), m), min(int(knn), n)
            r_src = torch.empty(n, device=dev)
            on_cpu = dev.type == "cpu" and not TORCH_BLOCKS_ON_CPU
            col = np.full((ky, m), -np.inf, np.float32) if on_cpu else torch.full((ky, m), -torch.inf, device=dev)
            for start, S in score_blocks(Xs, Ys, device=dev):
                r_src[start : start + len(S)] = torch.topk(S, kx, dim=1).values.double().mean(dim=1).float()
                if on_cpu:
                    _column_topk_np(S.numpy(), col)
                else:
                    _column_topk(S, col, ky)
            col = torch.from_numpy(col) if on_cpu else col
            r_tgt = col.double().mean(dim=0).float()  # r_S(y): y's neighbourhood among sources
            # The second sweep scores CSLS/2 = x·y − r_T(x)/2 − r_S(y)/2 straight from the product: [x, −r_T/2, 1]
            # against [y, 1, −r_S/2] (methods.md's augmented vectors), so no pass over the block but the maxima.
            half_src, half_tgt = -0.5 * r_src.cpu().numpy()[:, None], -0.5 * r_tgt.cpu().numpy()[:, None]
            A = np.hstack([_f32(Xs), half_src, np.ones_like(half_src)])
            B = np.hstack([_f32(Ys), np.ones_like(half_tgt), half_tgt])
            scale = 2.0
        if dev.type == "cpu" and not TORCH_BLOCKS_ON_CPU:  # numpy reductions: no index-carrying torch passes
            fwd_np, fwd_s_np = np.empty(fr, dtype=np.int64), np.empty(fr, dtype=np.float32)
            best_np = _ColumnBestNp(bc)
            for start, S in score_blocks(A[:fr], B, device=dev):
                S = S.numpy()
                fwd_s_np[start : start + len(S)], fwd_np[start : start + len(S)] = _row_best_np(S)
                best_np.update(S[:, :bc], start)
            if fr < n and bc > 0:  # sources beyond fwd_rows only compete for the first bwd_cols targets
                for start, S in score_blocks(A[fr:], B[:bc], device=dev):
                    best_np.update(S.numpy(), fr + start)
            return fwd_np, best_np.index, fwd_s_np * np.float32(scale), stats
        fwd_s = torch.empty(fr, device=dev)
        fwd = torch.empty(fr, dtype=torch.long, device=dev)
        best = _ColumnBest(bc, dev)
        for start, S in score_blocks(A[:fr], B, device=dev):
            fwd_s[start : start + len(S)], fwd[start : start + len(S)] = S.max(dim=1)
            best.update(S[:, :bc], start)
        if fr < n and bc > 0:  # sources beyond fwd_rows only compete for the first bwd_cols targets
            for start, S in score_blocks(A[fr:], B[:bc], device=dev):
                best.update(S, fr + start)
        fwd_s = fwd_s * scale
        return fwd.cpu().numpy(), best.index.cpu().numpy(), fwd_s.cpu().numpy(), stats
