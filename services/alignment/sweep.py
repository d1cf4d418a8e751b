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
  On CPU (:func:`_mutual_csls_cpu`) the first sweep also takes each column's best source (2 cos − r_T ranks
  a column's sources without r_S) and keeps each forward row's 32 best cosines; with r_S known, a row's
  best among them is certified when nothing outside can beat it (the tenth of targets with the smallest
  r_S scored exactly, the rest bounded), and only the other rows are scored again: 1.05-1.10 sweeps'
  products instead of 2 (en-fr after InstaMap's expansions: 90-95 % of rows certified).

Blocks are numpy BLAS products on CPU (OpenBLAS measured 85 vs 55 GFLOPS for torch's MKL on one core of the
AMD development box) reduced with torch (``torch.from_numpy``: no copy), or torch on CUDA. Results equal the
reference searches up to float rounding (ties may break differently).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

__all__ = ["FUSED_BLOCK_ELEMENTS", "FUSED_MIN_ROWS", "mutual_nn_fused", "row_topk", "row_topk_values",
           "score_blocks"]

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

        with _BLAS_LIMITS[0].limit(limits=1, user_api="blas"), _torch_threads(1):
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


# Columns per group in row_topk_values: the group maxima are one cheap pass, and a row's k best values lie in
# its k best groups (each of the k best values is in a distinct group or shares one with a better value).
TOPK_GROUP = 32


def row_topk(S, k: int):
    """``torch.topk(S, k, dim=1)`` (each row's k largest values, largest first, and their columns), exact, for
    CPU blocks.

    Only the k groups of TOPK_GROUP columns with the largest maxima can hold a row's k largest values (a value
    outside them would have k group maxima, k distinct entries, at least as large), so the top-k runs over
    those k·32 entries and the columns left over by the grouping. The values, and their order, are torch's
    own (columns of equal values may come in another order); on a 2,048 × 20,000 block at k = 10, 16.9
    against 32.1 ms. Other devices, narrow rows: torch.topk.
    """
    import torch

    rows, m = S.shape
    groups = m // TOPK_GROUP
    if S.device.type != "cpu" or groups < 4 * k:
        return torch.topk(S, k, dim=1)
    maxima = S.unfold(1, TOPK_GROUP, TOPK_GROUP).amax(dim=2)  # the last, partial group is left out of unfold
    best = torch.topk(maxima, k, dim=1, sorted=False).indices
    cols = (best.unsqueeze(2) * TOPK_GROUP + torch.arange(TOPK_GROUP)).reshape(rows, k * TOPK_GROUP)
    if m > groups * TOPK_GROUP:
        cols = torch.cat([cols, torch.arange(groups * TOPK_GROUP, m).expand(rows, -1)], dim=1)
    values, where = torch.topk(torch.gather(S, 1, cols), k, dim=1)
    return values, torch.gather(cols, 1, where)


def row_topk_values(S, k: int):
    """``torch.topk(S, k, dim=1).values`` by :func:`row_topk`."""
    return row_topk(S, k)[0]


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads for the calling thread set to ``n`` inside the block (score_blocks' consumer).

    The GEMM threads already hold every core while the consumer reduces a block; a torch op that forks its
    own OpenMP team then waits at the team's barrier for a thread the OS has descheduled (measured: a
    512 × 20,000 group maximum 1.4 ms alone, 12 ms beside the GEMM threads; vecmap+instamap at 50k 30.0 →
    26.7 s with one thread). With the OpenMP backend the setting is the calling thread's own (other threads
    keep theirs; MKL's count, which torch also sets, is process-wide while the block runs).
    """
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    if retrieval == "csls" and dev.type == "cpu" and not TORCH_BLOCKS_ON_CPU:
        return _mutual_csls_cpu(_f32(Xs), _f32(Ys), min(int(knn), m), min(int(knn), n), fr, bc)
    with torch.no_grad():
        A, B, scale = Xs, Ys, 1.0
        if retrieval == "csls":  # torch blocks (CUDA, or the tests' CPU stand-in); numpy CPU blocks returned above
            kx, ky = min(int(knn), m), min(int(knn), n)
            r_src = torch.empty(n, device=dev)
            col = torch.full((ky, m), -torch.inf, device=dev)
            for start, S in score_blocks(Xs, Ys, device=dev):
                r_src[start : start + len(S)] = torch.topk(S, kx, dim=1).values.double().mean(dim=1).float()
                _column_topk(S, col, ky)
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


# Forward candidates kept per row by the first CSLS sweep on CPU: rows whose CSLS best is certified among them
# skip the second sweep. Measured on en-fr 20k x 20k: with the bound min r_S alone 18 % of rows certified at
# 10 candidates, 42 % at 32, 68 % at 64; with the low-r_S tenth scored exactly, 92 % at 32 (90-95 % in
# InstaMap's expansions), the cheapest total (a 64-best costs as much as the rows it saves).
CSLS_CANDIDATES = 32
# ... and the share of targets (those with the smallest r_S) scored exactly for every forward row.
CSLS_LOW_R_SHARE = 0.1


def _mutual_csls_cpu(Xs: np.ndarray, Ys: np.ndarray, kx: int, ky: int, fr: int, bc: int):
    """mutual_nn_fused's CSLS on CPU with most of the second sweep certified away (same results, exact).

    First sweep, per block of rows: r_T(x) from each row's top-k, the running column top-k for r_S(y), each
    column's best source under 2 cos − r_T (the column term r_S(y) does not change a column's ranking, so the
    backward search needs only the block's rows), and each forward row's CSLS_CANDIDATES best cosines. Then,
    with r_S known, the tenth of targets with the smallest r_S (CSLS_LOW_R_SHARE) are scored exactly for every
    forward row, and a row's best among its candidates and those is its best overall when it beats the bound
    every other target is under: 2 · (its candidates' smallest cosine) − (the smallest r_S of the rest). The
    second sweep scores only the rows not certified so. Scores are computed from the cosines instead of the augmented product: equal
    up to float rounding, so near-exact ties may break differently (as between the reference's searches).
    """
    import torch

    n, m = len(Xs), len(Ys)
    M = max(1, min(CSLS_CANDIDATES, m))
    top = min(max(M, kx), m)  # one top-k gives both the candidates and r_T's k best
    r_src = np.empty(n, np.float32)
    col = np.full((ky, m), -np.inf, np.float32)
    cand_v, cand_i = np.empty((fr, M), np.float32), np.empty((fr, M), np.int64)
    backward = _ColumnBestNp(bc)
    with torch.no_grad():
        for start, S in score_blocks(Xs, Ys, device="cpu"):
            b, head = len(S), max(0, min(len(S), fr - start))  # head: this block's rows with a forward search
            if head:
                v, i = row_topk(S[:head], top)
                cand_v[start : start + head], cand_i[start : start + head] = v[:, :M].numpy(), i[:, :M].numpy()
                r_src[start : start + head] = v[:, :kx].double().mean(dim=1).float().numpy()
            if head < b:
                r_src[start + head : start + b] = row_topk_values(S[head:], kx).double().mean(dim=1).float().numpy()
            block = S.numpy()
            _column_topk_np(block, col)
            if bc:
                backward.update(block[:, :bc] - 0.5 * r_src[start : start + b, None], start)
    r_tgt = col.astype(np.float64).mean(axis=0).astype(np.float32)  # r_S(y): y's neighbourhood among sources
    scores = 2 * cand_v - r_tgt[cand_i]
    best = scores.argmax(axis=1)
    rows = np.arange(fr)
    fwd, fwd_s = cand_i[rows, best], scores[rows, best] - r_src[:fr]
    low = np.zeros(0, dtype=np.int64)
    if M < m:
        # Targets with the smallest r_S are the ones a row's candidates cannot vouch against: they are scored
        # exactly (a product with a tenth of the columns); every other target outside the candidates scores
        # at most 2 · cand_v[:, -1] − tau.
        if fr:
            with np.errstate(invalid="ignore"):  # NaN rows (callers' sentinels beyond a cut) certify nothing
                low = np.flatnonzero(r_tgt < np.quantile(r_tgt, CSLS_LOW_R_SHARE))
        tau = np.float32(r_tgt.min()) if len(low) == 0 else np.float32(np.delete(r_tgt, low).min())
        if len(low):
            B_low = Ys[low]
            for start, S in score_blocks(Xs[:fr], B_low, device="cpu"):
                block = 2 * S.numpy() - r_tgt[low]
                j = block.argmax(axis=1)
                v = block[np.arange(len(j)), j]
                sl = slice(start, start + len(j))
                better = v > scores[rows[sl], best[sl]]
                fwd[sl] = np.where(better, low[j], fwd[sl])
                fwd_s[sl] = np.where(better, v - r_src[sl], fwd_s[sl])
        best_score = fwd_s + r_src[:fr]
        redo = np.flatnonzero(~(best_score > 2 * cand_v[:, -1] - tau))
    else:
        redo = np.zeros(0, dtype=np.int64)
    if len(redo):
        # CSLS/2 = x·y − r_T(x)/2 − r_S(y)/2 from the product of [x, −r_T/2, 1] and [y, 1, −r_S/2], as the
        # full second sweep scores it
        A = np.hstack([Xs[redo], -0.5 * r_src[redo, None], np.ones((len(redo), 1), np.float32)])
        B = np.hstack([Ys, np.ones((m, 1), np.float32), -0.5 * r_tgt[:, None]])
        for start, S in score_blocks(A, B, device="cpu"):
            value, index = _row_best_np(S.numpy())
            fwd[redo[start : start + len(S)]] = index
            fwd_s[redo[start : start + len(S)]] = 2 * value
    # products made, in full sweeps: the first, the low-r_S columns for the forward rows, the rows redone
    stats = {"sweeps": round(1 + (fr * len(low) + len(redo) * m) / max(n * m, 1), 4),
             "certified_rows": fr - len(redo), "forward_rows": fr, "low_r_targets": len(low)}
    return fwd, backward.index, fwd_s.astype(np.float32), stats
