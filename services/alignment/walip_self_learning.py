"""WALIP step 2, ``variant="self-learning"``: VecMap's robust self-learning (Artetxe, Labaka & Agirre, ACL 2018,
sections 3.3-3.4), seeded by WALIP's pivots or identical strings instead of the paper's unsupervised initialisation.

Split out of :mod:`services.alignment.walip` (the paper's loop and the ``confident`` default live there); the
names stay importable from it.
"""

from __future__ import annotations

import numpy as np

from services.alignment.procrustes import multistep_mapping, procrustes
from services.alignment.walip import ProgressFn, WalipResult, _unit
from services.errors import InvalidInput

__all__ = ["SELF_LEARNING_CACHE_BYTES", "SELF_LEARNING_FINAL_ITER", "SELF_LEARNING_INTERVAL", "SELF_LEARNING_MAX_ITER",
           "walip_self_learning"]

# The paper's (and VecMap's) interval is 50 iterations; on 2 CPU cores one iteration over 20k × 20k words costs
# seconds, and the schedule needs at least 5 stagnant intervals (keep probability 0.1 → 0.2 → 0.4 → 0.8 → 1.0 →
# end), i.e. ≥ 255 iterations: about an hour here. 3 was fixed before anything was measured (issue 15), so a run is
# a few minutes: each keep probability still gets 4 iterations without an improvement before it is raised.
SELF_LEARNING_INTERVAL = 3
# Iterations of the stochastic phase (p < 1). Measured at 20k on 2 cores (en→fr, issue 15) one iteration costs
# ~8.5 s, and with a cap of 100 the objective still improved by ≥ 1e-6 often enough that p never reached 1: the run
# ended on a stochastic dictionary after 850 s. So the cap now ends the stochastic phase only: p jumps to 1 and the
# deterministic phase runs to its own stall (at most SELF_LEARNING_FINAL_ITER iterations). 30 is a cost bound
# (about 4-5 min at 20k here), not a score choice.
SELF_LEARNING_MAX_ITER = 30
SELF_LEARNING_FINAL_ITER = 10


# Similarities of one self-learning iteration kept between its two sweeps when they fit in this many bytes
# (20k × 20k float32 = 1.6 GB): the second sweep then reads them instead of multiplying again. Above it, both
# sweeps multiply (memory stays at a few blocks).
SELF_LEARNING_CACHE_BYTES = 2 << 30


def _one_blas_thread():
    """BLAS limited to one thread for the small fits between sweeps: measured on the busy 2-core box, a 300 × 300
    SVD right after a sweep took 3.8 s with OpenBLAS's own threads (they spin against torch's)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _sl_induce(xw: np.ndarray, zw: np.ndarray, *, keep: float, knn: int, direction: str, rng: np.random.Generator,
               cache_bytes: int = SELF_LEARNING_CACHE_BYTES) -> dict[str, np.ndarray]:
    """VecMap's dictionary induction (ACL 2018, section 3.3) over xw (n × d) and zw (m × d), in row blocks.

    Forward: each source row's best target under CSLS (2 x·z − r_S(z); the query's own r_T is constant) after
    dropping every similarity with probability 1 − ``keep``; backward the same for each target (column), with an
    independent drop. ``best_fwd`` / ``best_bwd``: each row's / column's largest plain inner product (no CSLS, no
    drop), whose means make the objective. A similarity is kept when a uniform 16-bit draw is below round(keep·2¹⁶)
    (keep probability exact to 2⁻¹⁷). Sweep 1 (services.alignment.sweep.score_blocks) gives r_T(x) (row top-k)
    and r_S(z) (running column top-k); sweep 2 the argmaxes, from the cached blocks when n·m·4 ≤ ``cache_bytes``.
    """
    import torch

    from services.alignment.sweep import _column_topk_np, row_topk_values, score_blocks

    n, m = len(xw), len(zw)
    kr, kc = min(max(knn, 1), m), min(max(knn, 1), n)
    cache = np.empty((n, m), np.float32) if n * m * 4 <= cache_bytes else None
    r_src, r_tgt = np.zeros(n, np.float32), np.zeros(m, np.float32)
    if knn > 0 or cache is not None:
        col = np.full((kc, m), -np.inf, np.float32)
        with torch.no_grad():
            for start, S in score_blocks(xw, zw, device="cpu"):
                block = S.numpy()
                if cache is not None:
                    cache[start : start + len(block)] = block
                if knn > 0:
                    r_src[start : start + len(block)] = row_topk_values(S, kr).double().mean(dim=1).float().numpy()
                    _column_topk_np(block, col)
        if knn > 0:
            r_tgt = col.astype(np.float64).mean(axis=0).astype(np.float32)  # r_S(z): z's neighbourhood among sources
    half_tgt, half_src = 0.5 * r_tgt, 0.5 * r_src
    if cache is not None:
        rows = max(1, min(n, (1 << 22) // max(m, 1)))
        blocks = ((s, cache[s : s + rows]) for s in range(0, n, rows))
    else:
        blocks = ((s, S.numpy()) for s, S in score_blocks(xw, zw, device="cpu"))
    fwd = np.zeros(n, np.int64)
    best_fwd = np.empty(n, np.float32)
    best_bwd = np.full(m, -np.inf, np.float32)
    col_val = np.full(m, -np.inf, np.float32)
    col_idx = np.zeros(m, np.int64)
    want_fwd, want_bwd = direction in ("forward", "union"), direction in ("backward", "union")
    # a similarity is kept when a uniform 16-bit draw is below keep · 2^16 (half the cost of float draws)
    keep16 = int(round(keep * (1 << 16)))
    buf = None
    for start, block in blocks:
        stop = start + len(block)
        best_fwd[start:stop] = block.max(axis=1)
        np.maximum(best_bwd, block.max(axis=0), out=best_bwd)
        if buf is None or len(buf) < len(block):
            buf = np.empty(block.shape, np.float32)
        F = buf[: len(block)]
        if want_fwd:
            np.subtract(block, half_tgt[None, :], out=F)
            if keep < 1.0:
                np.putmask(F, rng.integers(0, 1 << 16, F.shape, dtype=np.uint16) >= keep16, -np.inf)
            fwd[start:stop] = F.argmax(axis=1)
        if want_bwd:
            np.subtract(block, half_src[start:stop, None], out=F)
            if keep < 1.0:
                np.putmask(F, rng.integers(0, 1 << 16, F.shape, dtype=np.uint16) >= keep16, -np.inf)
            v, a = torch.from_numpy(F).max(dim=0)  # torch: numpy's column argmax is ~15× slower
            val, arg = v.numpy(), a.numpy()
            better = val > col_val  # across blocks the first (lowest) source row keeps a tie
            col_val[better], col_idx[better] = val[better], arg[better] + start
    return {"fwd": fwd, "bwd": col_idx, "best_fwd": best_fwd, "best_bwd": best_bwd}


def walip_self_learning(
    X: np.ndarray,
    Y: np.ndarray,
    seed_pairs: np.ndarray,
    *,
    vocabulary_cutoff: int | None = 20000,
    knn: int = 10,
    direction: str = "union",
    stochastic_initial: float = 0.1,
    stochastic_multiplier: float = 2.0,
    stochastic_interval: int = SELF_LEARNING_INTERVAL,
    threshold: float = 1e-6,
    max_iter: int = SELF_LEARNING_MAX_ITER,
    whiten: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> WalipResult:
    """WALIP step 2 as VecMap's robust self-learning (Artetxe, Labaka & Agirre, ACL 2018, "A robust self-learning
    method for fully unsupervised cross-lingual mappings of word embeddings", sections 3.3-3.4), from seed pairs.

    The seeds (identical strings, fingerprint pivots, a user dictionary) replace the paper's unsupervised
    initialisation (section 3.2) as the first dictionary; they are not kept afterwards, as in VecMap. Then, until
    convergence, (1) the orthogonal map maximising the similarity of the current dictionary's pairs, W = Procrustes
    (VecMap: x ↦ x W, targets stay put); (2) dictionary induction (section 3.3) over the ``vocabulary_cutoff`` most
    frequent words of each side: CSLS (``knn`` = 10) nearest neighbours, both directions ("union": each source's best
    target and each target's best source, 2 × cutoff pairs), stochastic: every similarity is kept with probability
    p, p = ``stochastic_initial`` at first and multiplied by ``stochastic_multiplier`` (up to 1) whenever the
    objective (mean of the best plain similarity of each source and each target, averaged over the two directions)
    has not improved by ≥ ``threshold`` for ``stochastic_interval`` iterations; at p = 1 the next such stall ends the
    loop. (3) After convergence, the multi-step refinement of section 3.4 on the last dictionary
    (:func:`~services.alignment.procrustes.multistep_mapping`: whiten, orthogonal map, re-weight by Σ^0.5 on both
    sides, de-whiten) gives the returned (W, Wz). All of this is VecMap's ``--unsupervised`` defaults except:

    - ``stochastic_interval`` is :data:`SELF_LEARNING_INTERVAL` (3), not 50: fixed before any measurement so one
      run stays at minutes on 2 CPU cores (see the constant); ``max_iter`` caps the stochastic phase: past it p
      jumps to 1 and the deterministic phase runs until the objective stalls for the interval (at most
      :data:`SELF_LEARNING_FINAL_ITER` more iterations), then the multi-step refinement
      (``history[-1]["stopped_by"]``: "converged" or "max_iter");
    - a dropped similarity is excluded from the argmax (VecMap multiplies it by 0, which can win over negative
      CSLS scores); identical whenever a row keeps one positive score;
    - ``whiten=True`` maps whitened embeddings during self-learning (each side whitened on its dictionary rows,
      then the orthogonal map; the paper's wording); the default ``False`` is the released code (orthogonal map
      on the normalised embeddings). A dictionary too small to whiten gets the plain orthogonal map.

    Chunked (services.alignment.sweep.score_blocks): two sweeps of the cutoff × cutoff similarities per iteration;
    the second reads the first's blocks when they fit in :data:`SELF_LEARNING_CACHE_BYTES` (20k × 20k: 1.6 GB),
    else multiplies again. Deterministic for a given ``seed`` (numpy generator for the drops). ``progress`` gets
    ("walip", iteration, max_iter + SELF_LEARNING_FINAL_ITER (the bound), record) after each induction. Returns a :class:`WalipResult` whose ``W``/``Wz``
    are the final multi-step maps, ``pairs`` the mutual CSLS dictionary of the final spaces (best first) and
    ``validation_losses`` 1 − objective per iteration.
    """
    import time

    from services.alignment.procrustes import whitening
    from services.alignment.retrieval import mutual_nn

    seed_pairs = np.asarray(seed_pairs, dtype=np.int64).reshape(-1, 2)
    if len(seed_pairs) == 0:
        raise InvalidInput("WALIP needs at least one seed pair")
    if direction not in ("forward", "backward", "union"):
        raise InvalidInput(f"unknown direction {direction!r}; use 'forward', 'backward' or 'union'",
                           detail={"field": "direction"})
    if not 0.0 < float(stochastic_initial) <= 1.0 or float(stochastic_multiplier) <= 1.0:
        raise InvalidInput("stochastic_initial must be in (0, 1] and stochastic_multiplier > 1",
                           detail={"stochastic_initial": stochastic_initial, "stochastic_multiplier": stochastic_multiplier})
    if int(stochastic_interval) < 1 or int(max_iter) < 1 or int(knn) < 0:
        raise InvalidInput("stochastic_interval and max_iter must be at least 1, knn at least 0",
                           detail={"stochastic_interval": stochastic_interval, "max_iter": max_iter, "knn": knn})
    X = _unit(X)
    Y = _unit(Y)
    n_src = len(X) if vocabulary_cutoff is None else min(len(X), int(vocabulary_cutoff))
    n_tgt = len(Y) if vocabulary_cutoff is None else min(len(Y), int(vocabulary_cutoff))
    Xv, Yv = X[:n_src], Y[:n_tgt]
    rng = np.random.default_rng(int(seed))
    src_idx, trg_idx = seed_pairs[:, 0], seed_pairs[:, 1]

    def orthogonal(src: np.ndarray, trg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with _one_blas_thread():
            return _orthogonal(src, trg)

    def _orthogonal(src: np.ndarray, trg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A, B = X[src], Y[trg]
        if whiten:
            try:
                Wx1, Wz1 = whitening(A), whitening(B)
            except InvalidInput:
                return procrustes(A, B).astype(np.float32), np.eye(Y.shape[1], dtype=np.float32)
            U, _, Vt = np.linalg.svd((A @ Wx1).T @ (B @ Wz1))
            return (Wx1 @ U).astype(np.float32), (Wz1 @ Vt.T).astype(np.float32)
        return procrustes(A, B).astype(np.float32), np.eye(Y.shape[1], dtype=np.float32)

    keep = float(stochastic_initial)
    best_objective, last_improvement, it = -np.inf, 0, 1
    losses: list[float] = []
    history: list[dict] = []
    stopped_by = "converged"
    while True:
        if it - last_improvement > int(stochastic_interval):
            if keep >= 1.0:
                break
            keep = min(1.0, float(stochastic_multiplier) * keep)
            last_improvement = it
        if it > int(max_iter) and keep < 1.0:  # the stochastic phase is over: finish deterministically (p = 1)
            stopped_by = "max_iter"
            keep, last_improvement = 1.0, it
        if it > int(max_iter) + SELF_LEARNING_FINAL_ITER:
            stopped_by = "max_iter"
            break
        started = time.perf_counter()
        Wx, Wz = orthogonal(src_idx, trg_idx)
        xw = (Xv @ Wx).astype(np.float32)
        zw = Yv if not whiten else (Yv @ Wz).astype(np.float32)
        ind = _sl_induce(xw, zw, keep=keep, knn=int(knn), direction=direction, rng=rng)
        fwd_src, bwd_tgt = np.arange(n_src, dtype=np.int64), np.arange(n_tgt, dtype=np.int64)
        if direction == "forward":
            src_idx, trg_idx = fwd_src, ind["fwd"]
            objective = float(np.mean(ind["best_fwd"], dtype=np.float64))
        elif direction == "backward":
            src_idx, trg_idx = ind["bwd"], bwd_tgt
            objective = float(np.mean(ind["best_bwd"], dtype=np.float64))
        else:
            src_idx = np.concatenate([fwd_src, ind["bwd"]])
            trg_idx = np.concatenate([ind["fwd"], bwd_tgt])
            objective = float((np.mean(ind["best_fwd"], dtype=np.float64) + np.mean(ind["best_bwd"], dtype=np.float64)) / 2)
        improved = objective - best_objective >= float(threshold)
        if improved:
            last_improvement, best_objective = it, objective
        losses.append(1.0 - objective)
        record = {"iteration": it, "objective": objective, "keep_prob": keep, "improved": bool(improved),
                  "dictionary_pairs": int(len(np.unique(np.stack([src_idx, trg_idx], 1), axis=0))),
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if progress is not None:
            progress("walip", it, int(max_iter) + SELF_LEARNING_FINAL_ITER, dict(record))
        it += 1
    # Section 3.4: whitening, orthogonal mapping, re-weighting, de-whitening on the final dictionary.
    try:
        with _one_blas_thread():
            Wx, Wz = multistep_mapping(X[src_idx], Y[trg_idx])
        final_fit = "multistep"
    except InvalidInput:  # fewer independent pairs than dimensions (tiny vocabularies): the orthogonal map
        Wx, Wz = procrustes(X[src_idx], Y[trg_idx]), np.eye(Y.shape[1])
        final_fit = "orthogonal"
    Wx, Wz = np.asarray(Wx, np.float32), np.asarray(Wz, np.float32)
    if history:
        history[-1]["stopped_by"] = stopped_by
        history[-1]["final_fit"] = final_fit
        history[-1]["final_dictionary_pairs"] = int(len(src_idx))
    final, final_scores = mutual_nn(_unit(Xv @ Wx), _unit(Yv @ Wz), retrieval="csls", knn=max(int(knn), 1))
    return WalipResult(Wx, final, final_scores, losses, max(len(losses) - 1, 0), history, Wz)
