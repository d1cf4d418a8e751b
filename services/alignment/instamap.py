"""InstaMap: Kabsch rotation + per-word translation vectors + mutual-NN dictionary expansion (methods.md, "InstaMap").

``variant="paper"`` (default; methods.md "InstaMap", the paper's bullets): T = 4 iterations, K = 70; each
iteration fits Kabsch on the dictionary, rotates the source, moves every source x by
+Σ cos(x, x_k)(y_k − x_k) / Σ cos(x, x_k) over its K nearest (rotated) dictionary sources and every target
y by −Σ cos(y, y_k)(y_k − x_k) / Σ cos(y, y_k) over its K nearest dictionary targets — the full shift on
both sides (``src_step = tgt_step = 1``) — then EXTENDS the dictionary with mutual nearest neighbours of
the new space. Choices methods.md leaves open, ours: the expansion uses CSLS-10 mutual NN over the
``expand_vocab`` (default 20,000) most frequent words of each side, and rows are re-normalised after
each iteration so cosine neighbourhoods stay meaningful.

``variant="code"`` (methods.md "InstaMap", "What the authors' code does"): T = 3 by default, centred
PCA (290 components) of both current spaces every iteration, full steps on both sides (forced: other
``src_step``/``tgt_step`` values are rejected), and the dictionary REPLACED by plain-cosine mutual NN over
the WHOLE vocabularies (forced: an ``expand_vocab`` cap is rejected).

Other step sizes are selectable on the paper variant: ``src_step = tgt_step = 0.5`` moves both sides
half-way so dictionary pairs meet in the middle (the full step on both sides makes x' ≈ y and y' ≈ x,
i.e. it swaps them); ``tgt_step=0`` moves only the source. On the planted non-linear test world the
full and half steps score alike; neither has been shown better on real data, so the paper's value is
the default.

Two engines compute the same iterations (``engine``): ``"fast"`` (default) and ``"reference"`` (the first
implementation, kept selectable: FAISS top-K searches over every dictionary entry, the (n, K, d) gather of
translation vectors, two searches per direction for each mutual-NN expansion, and the registry transforming
both vocabularies again after the fit). The fast engine, per shift (:func:`anchor_shift`):

- identical anchors (a dictionary source with several targets) are searched once: the K nearest *entries*
  are whole groups of equal anchors in score order, the last group cut to fill K (entries of one group in
  dictionary order), and a group's contribution is its score times a prefix sum of its translation vectors,
  so the top-K runs over the unique anchors (en→fr MUSE seeds: 4,175 unique sources for 7,950 pairs);
- exact scores in blocks (numpy's BLAS on CPU, torch on CUDA), torch's top-K, and the weighted sum of
  translation vectors as one ``embedding_bag`` (no (n, K, d) temporary: 688 MB per 8,192-row chunk before);

the expansion is one sweep (``retrieval.mutual_nn_fused``), and the fitted spaces are handed to the registry
instead of transforming both vocabularies again. The K nearest sets are the reference's (ties between equal
scores aside), weights and sums equal up to float32 summation order. Measured in benchmarks/scale.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from services.alignment.mapping import InstaMapIteration, InstaMapStage, _unit
from services.alignment.procrustes import kabsch
from services.errors import InvalidInput

__all__ = ["ENGINES", "anchor_shift", "fit_instamap"]

ENGINES = ("fast", "reference")

ProgressFn = Callable[[str, int, int, dict], None]


def _pca(V: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    mean = V.mean(axis=0)
    C = np.asarray(V - mean, np.float64)
    _, _, Vt = np.linalg.svd(C.T @ C)
    return mean.astype(np.float32), Vt[:n_components].T.astype(np.float32)


def _anchor_groups(anchors: np.ndarray, deltas: np.ndarray):
    """Unique anchor rows (first-occurrence order), their multiplicities, and the within-group prefix sums of
    the translation vectors (entries of a group in dictionary order): row ``start[g] + c − 1`` of the prefix
    table is the sum of group g's first c translation vectors."""
    A = np.ascontiguousarray(anchors, dtype=np.float32)
    keys = A.view(np.dtype((np.void, A.dtype.itemsize * A.shape[1])))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = rank[inverse.ravel()]  # group id by first occurrence
    order = np.lexsort((np.arange(len(A)), group))  # by group, then dictionary order
    counts = np.bincount(group, minlength=len(first))
    start = np.cumsum(counts) - counts
    nonzero = start > 0
    grouped = group[order]
    D = np.asarray(deltas)
    prefix = np.empty(D.shape, dtype=np.float32)
    # float64 prefix sums a few columns at a time (columns are independent): the same numbers without five
    # whole (p, d) float64 temporaries (~165 MB at 19k pairs x 300, the fit's peak at 50k words).
    for c in range(0, D.shape[1], _PREFIX_COLUMNS):
        csum = np.cumsum(D[order, c : c + _PREFIX_COLUMNS].astype(np.float64), axis=0)
        base = np.zeros((len(first), csum.shape[1]))
        base[nonzero] = csum[start[nonzero] - 1]
        prefix[:, c : c + _PREFIX_COLUMNS] = csum - base[grouped]
    unique = A[np.sort(first)]
    return unique, counts, start, prefix


_PREFIX_COLUMNS = 32


def anchor_shift(V: np.ndarray, anchors: np.ndarray, deltas: np.ndarray, K: int, *, clip_negative: bool = False,
                 device="auto") -> np.ndarray:
    """Σ_k cos(v, a_k) δ_k / Σ_k cos(v, a_k) over the K dictionary entries nearest each row v (methods.md,
    "InstaMap"), as ``mapping.instamap_shift`` but over unique anchors, in blocks, with one embedding_bag.

    The K nearest entries: unique anchors by decreasing cosine, each contributing all its entries until K
    are taken (the last one cut, in dictionary order). A (near-)zero weight sum falls back to the plain mean
    of the K entries' translation vectors, as the reference does.
    """
    import torch

    from services.alignment.mapping import _unit
    from services.alignment.retrieval import score_blocks, torch_device

    dev = torch_device(device)
    V = np.ascontiguousarray(V, dtype=np.float32)
    out = np.empty_like(V)
    if len(V) == 0:
        return out
    K = int(min(K, len(anchors)))
    unique, counts, start, prefix = _anchor_groups(_unit(np.asarray(anchors, np.float32)), deltas)
    k = min(K, len(unique))  # K unique anchors always hold at least K entries
    on_cpu = dev.type == "cpu"
    prefix_t = torch.from_numpy(prefix).to(dev)
    if not on_cpu:
        counts, start = torch.from_numpy(counts).to(dev), torch.from_numpy(start).to(dev)
    with torch.no_grad():
        # Blocks of ~2^22 scores (two of them: score_blocks computes the next while this one is reduced), at
        # least FUSED_MIN_ROWS rows: the (rows × K) bookkeeping runs once per block. Rows are normalised per
        # block (cosines), no copy of V.
        for first, S in score_blocks(V, unique, device=dev, block_elements=1 << 22, unit_rows=True):
            # Unsorted top-k, then a sort of the k winners (the groups are taken in score order; ties between
            # equal scores aside): 20.7 against 31.5 ms for a sorted top-70 of a 1,000 × 8,000 block.
            sims, g = torch.topk(S, k, dim=1, sorted=False)
            sims, order = torch.sort(sims, dim=1, descending=True)
            g = torch.gather(g, 1, order)
            if on_cpu:  # small arrays: numpy, no thread-pool wake-ups per operation
                rows, weights = _entry_weights_np(sims.numpy(), g.numpy(), counts, start, K, clip_negative)
                rows, weights = torch.from_numpy(rows), torch.from_numpy(weights)
            else:
                rows, weights = _entry_weights_torch(sims, g, counts, start, K, clip_negative)
            shift = torch.nn.functional.embedding_bag(rows, prefix_t, per_sample_weights=weights, mode="sum")
            out[first : first + len(sims)] = shift.cpu().numpy()
    return out


def _entry_weights_np(sims, g, counts, start, K, clip_negative):
    """(prefix-table rows, weights) of each row's K nearest entries, given its top unique anchors (anchor_shift)."""
    mult = counts[g]
    before = np.cumsum(mult, axis=1) - mult
    take = np.minimum(np.maximum(K - before, 0), mult)  # entries taken from each anchor's group
    w = np.maximum(sims, 0) if clip_negative else sims
    denom = (w * take).sum(axis=1, keepdims=True)
    bad = np.abs(denom) < 1e-6  # weights cancel: the plain mean of the K entries, as the reference
    weights = np.where(bad, np.float32(1.0 / K), w / np.where(bad, 1.0, denom)).astype(np.float32)
    weights[take == 0] = 0.0
    return start[g] + np.maximum(take - 1, 0), weights


def _entry_weights_torch(sims, g, counts, start, K, clip_negative):
    """_entry_weights_np on device tensors (the CUDA path)."""
    import torch

    mult = counts[g]
    before = torch.cumsum(mult, dim=1) - mult
    take = torch.minimum(torch.clamp(K - before, min=0), mult)
    w = torch.clamp(sims, min=0) if clip_negative else sims
    denom = (w * take).sum(dim=1, keepdim=True)
    bad = denom.abs() < 1e-6
    weights = torch.where(bad, torch.full_like(w, 1.0 / K), w / torch.where(bad, torch.ones_like(denom), denom))
    weights = torch.where(take > 0, weights, torch.zeros_like(weights))
    return start[g] + torch.clamp(take - 1, min=0), weights


def fit_instamap(
    X: np.ndarray,
    Y: np.ndarray,
    pairs: np.ndarray,
    *,
    K: int = 70,
    T: int | None = None,
    variant: str = "paper",
    src_step: float | None = None,
    tgt_step: float | None = None,
    expand: bool = True,
    expand_vocab: int | None = None,
    expand_retrieval: str | None = None,
    pca_components: int = 290,
    engine: str = "fast",
    return_spaces: bool = False,
    keep_rows: int | None = None,
    progress: ProgressFn | None = None,
):
    """Fit InstaMap on unit rows X, Y and dictionary ``pairs``: (stage, final dictionary, per-iteration history).

    Defaults (None) follow the variant (methods.md, "InstaMap"): ``T`` 4 (paper) / 3 (code);
    ``src_step``/``tgt_step`` 1 and 1 (both variants; only the paper variant accepts other values);
    ``expand_vocab`` 20,000 (paper) / the whole vocabularies (code, which accepts no cap).
    ``engine``: ``"fast"`` or ``"reference"`` (module docstring). With ``return_spaces`` a fourth item is
    returned: the fitted (source, target) spaces, equal to ``stage.transform_source(X)`` /
    ``transform_target(Y)`` when X and Y have unit rows (the fast engine starts from them as given), else None.

    ``keep_rows`` (fast engine, paper variant, with ``return_spaces``): the caller needs only the first
    ``keep_rows`` rows of the fitted spaces (the registry's final dictionary when InstaMap is the last stage).
    The iterations then move only the rows they read -- the first ``max(expand_vocab, keep_rows)`` of each
    side and the dictionary's rows -- since a row's step depends on nothing but itself and the iteration's
    parameters (Kabsch on dictionary rows, anchors and deltas of dictionary rows, expansion inside
    ``expand_vocab``): the same stage, at a fraction of the shift work on large vocabularies (50k words: the
    other 30k rows of each side were shifted 4 times for nothing; the served mapping moves them when it
    builds its tables). The returned spaces are then those first rows only.
    """
    from services.alignment.retrieval import mutual_nn

    if variant not in ("paper", "code"):
        raise InvalidInput(f"unknown InstaMap variant {variant!r}; use 'paper' or 'code'")
    if engine not in ENGINES:
        raise InvalidInput(f"unknown InstaMap engine {engine!r}; use one of {list(ENGINES)}",
                           detail={"field": "engine", "known": list(ENGINES)})
    if variant == "code":
        if (src_step is not None and float(src_step) != 1.0) or (tgt_step is not None and float(tgt_step) != 1.0):
            raise InvalidInput(f"InstaMap variant 'code' moves both sides by the full shift (src_step = tgt_step = 1); "
                               f"got src_step={src_step}, tgt_step={tgt_step} (use variant 'paper' for other steps)")
        if expand_vocab is not None:
            raise InvalidInput(f"InstaMap variant 'code' expands over the whole vocabularies; got expand_vocab={expand_vocab} "
                               "(use variant 'paper' to cap it)")
    else:
        expand_vocab = 20000 if expand_vocab is None else int(expand_vocab)
        if expand_vocab < 1:
            raise InvalidInput(f"InstaMap expand_vocab must be >= 1, got {expand_vocab}")
    src_step = 1.0 if src_step is None else float(src_step)
    tgt_step = 1.0 if tgt_step is None else float(tgt_step)
    T = int(T if T is not None else (4 if variant == "paper" else 3))
    if T < 1 or K < 1:
        raise InvalidInput("InstaMap needs T ≥ 1 and K ≥ 1")
    pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    if len(pairs) == 0:
        raise InvalidInput("InstaMap needs a non-empty seed dictionary")
    retrieval = expand_retrieval or ("csls" if variant == "paper" else "nn")
    stage = InstaMapStage([], K=K, src_step=src_step, tgt_step=tgt_step, renormalize=True, engine=engine)
    exact_spaces = engine == "fast" and _unit_rows(X) and _unit_rows(Y)
    if exact_spaces:  # the very rows transform_source / transform_target will see
        Xc, Yc = np.asarray(X, np.float32), np.asarray(Y, np.float32)
    else:
        Xc, Yc = _unit(X), _unit(Y)
    rows_x = rows_y = None  # the rows moved (None: all of them)
    if keep_rows is not None and return_spaces and exact_spaces and variant == "paper":
        head = max(int(keep_rows), int(expand_vocab) if expand else 0)
        rows_x = np.union1d(np.arange(min(head, len(Xc))), pairs[:, 0])
        rows_y = np.union1d(np.arange(min(head, len(Yc))), pairs[:, 1])
        if len(rows_x) < len(Xc) or len(rows_y) < len(Yc):
            # Sorted unions that start with 0..head-1: local row = global row inside the head (expansions
            # stay there), dictionary rows beyond it are renumbered and mapped back at the end.
            Xc, Yc = Xc[rows_x], Yc[rows_y]
            pairs = np.stack([np.searchsorted(rows_x, pairs[:, 0]), np.searchsorted(rows_y, pairs[:, 1])], axis=1)
        else:
            rows_x = rows_y = None
    # The reference engine's searches: FAISS on CPU, torch on CUDA (its original "auto").
    search_backend = "auto" if engine == "fast" else ("torch" if _cuda() else "faiss")
    history: list[dict] = []
    for t in range(T):
        it = InstaMapIteration(W_R=np.eye(Xc.shape[1]), src_anchors=np.zeros((0, 1)), tgt_anchors=np.zeros((0, 1)))
        Xp, Yp = Xc, Yc
        if variant == "code":
            dims = min(pca_components, Xc.shape[1])
            it.src_mean, it.src_proj = _pca(Xc, dims)
            it.tgt_mean, it.tgt_proj = _pca(Yc, dims)
            Xp = ((Xc - it.src_mean) @ it.src_proj).astype(np.float32)
            Yp = ((Yc - it.tgt_mean) @ it.tgt_proj).astype(np.float32)
        with _one_blas_thread(engine == "fast"):  # a d × d SVD: threads only fight over a busy box
            it.W_R = kabsch(Xp[pairs[:, 0]], Yp[pairs[:, 1]])
        if engine == "fast":  # only the dictionary's source rows are rotated here (source_step rotates all)
            rows, inverse = np.unique(pairs[:, 0], return_inverse=True)
            it.src_anchors = (Xp[rows] @ it.W_R.astype(np.float32)).astype(np.float32)[inverse.ravel()]
        else:
            XR = (Xp @ it.W_R.astype(np.float32)).astype(np.float32)
            it.src_anchors = XR[pairs[:, 0]].copy()
        it.tgt_anchors = Yp[pairs[:, 1]]  # a gathered copy; the deltas are computed from both when a shift needs them
        stage.iterations.append(it)
        # The fitted space is produced by the very code that later translates new words.
        Xc = stage.source_step(Xc, it)
        Yc = stage.target_step(Yc, it)
        residual = float(np.mean(np.sum((Xc[pairs[:, 0]] - Yc[pairs[:, 1]]) ** 2, axis=1)))
        record = {"iteration": t + 1, "pairs": len(pairs), "dictionary_residual": residual}
        if expand and t < T - 1:
            new_pairs, _ = mutual_nn(Xc, Yc, retrieval=retrieval, max_src=expand_vocab, max_tgt=expand_vocab,
                                     backend=search_backend)
            pairs = new_pairs if variant == "code" else np.unique(np.vstack([pairs, new_pairs]), axis=0)
            if len(pairs) == 0:
                raise InvalidInput("InstaMap dictionary became empty after mutual-NN replacement")
            record["pairs_next"] = len(pairs)
        history.append(record)
        if progress is not None:
            progress("instamap", t + 1, T, dict(record))
    if rows_x is not None:
        pairs = np.stack([rows_x[pairs[:, 0]], rows_y[pairs[:, 1]]], axis=1)
        keep = int(keep_rows)
        Xc, Yc = Xc[: min(keep, len(Xc))], Yc[: min(keep, len(Yc))]
    if return_spaces:
        return stage, pairs, history, ((Xc, Yc) if exact_spaces else None)
    return stage, pairs, history


def _unit_rows(V: np.ndarray, tol: float = 1e-5) -> bool:
    """Every row of norm 1 (or 0) within ``tol``."""
    norms = np.linalg.norm(np.asarray(V, np.float32), axis=1)
    return bool(np.all((np.abs(norms - 1.0) <= tol) | (norms == 0)))


def _one_blas_thread(on: bool):
    """BLAS limited to one thread inside the block (measured: a 300 × 300 SVD took 0.42 s with two OpenBLAS
    threads on the busy 2-core box, ~0.03 s alone)."""
    from contextlib import nullcontext

    if not on:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
