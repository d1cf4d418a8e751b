"""WALIP step 2, final stage (issue 15): deterministic VecMap-style self-learning after the confident rounds.

The ``confident`` rounds (:func:`services.alignment.walip.walip_confident`) fit on at most ``top_pairs`` mutual CSLS
pairs plus the seeds. Measured on en→de (50k words, identical-string seeds, dev = MUSE 0-5000 *train* dictionary) the
loop stalls: the kept mutual pairs are ~30 % right (en→fr ~68 %), so the rounds end no better than a multi-step fit on
the seeds alone. This stage continues from the rounds' map with a dictionary that is not capped:

1. induce, over the ``vocab`` most frequent words of each side, every source's best target and every target's best
   source by CSLS (``knn`` = 10) — VecMap's ``--unsupervised`` dictionary induction with p = 1 and direction
   "union" (Artetxe, Labaka & Agirre, ACL 2018, section 3.3, no stochastic drops), 2 × vocab pairs — plus the
   seeds;
2. fit the orthogonal Procrustes map of that dictionary (unit rows; targets stay put);
3. repeat until the objective (mean best plain similarity, both directions averaged, as VecMap) improves by less
   than ``threshold`` or after ``max_iter`` inductions;
4. the multi-step framework (:func:`~services.alignment.procrustes.multistep_mapping`: whiten, orthogonal map,
   re-weight, de-whiten) on the last dictionary gives the returned (Wx, Wz), as VecMap's section 3.4.

The first induction runs in the rounds' (multi-step) space, whose similarities are not on the orthogonal scale, so the
stall test starts at the second. Settings (``vocab`` = the rounds' matching vocabulary, 10,000; ``threshold`` 1e-4,
``max_iter`` 20) are fixed a priori or for cost; what was compared on the dev split is in the README ("WALIP step 2").

Measured (benchmarks/bli.py, 50k words, identical-string seeds; issue 15): on the dev fifth of the MUSE 0-5000 train
dictionary (frequent words) P@1 CSLS en→fr 33.4 → 34.8, en→de 10.6 → 16.3; but on MUSE test (5000-6500) 33.9 → 28.4
and 10.5 → 10.1, and on the train words of rank ≥ 5000 29.5 → 24.3 and 13.4 → 7.2: the uncapped dictionary of the
10k most frequent words outweighs the seeds, which are spread over the whole vocabulary, and the map fits the frequent
words at the rarer ones' expense. So it is an option (``final_stage="union"``), not the registry's default.
"""

from __future__ import annotations

import time

import numpy as np

from services.alignment.procrustes import multistep_mapping, procrustes
from services.errors import InvalidInput

__all__ = ["FINAL_STAGES", "union_refine"]

FINAL_STAGES = ("union", "none")


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    n[n == 0] = 1
    return a / n


def _multistep_or_orthogonal(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        Wx, Wz = multistep_mapping(A, B)
        return np.asarray(Wx, np.float32), np.asarray(Wz, np.float32), "multistep"
    except InvalidInput:  # fewer independent pairs than dimensions: the orthogonal map
        return procrustes(A, B).astype(np.float32), np.eye(B.shape[1], dtype=np.float32), "orthogonal"


def union_refine(
    X: np.ndarray,
    Y: np.ndarray,
    Wx: np.ndarray,
    Wz: np.ndarray,
    seed_pairs: np.ndarray,
    *,
    vocab: int | None = 10000,
    knn: int = 10,
    max_iter: int = 20,
    threshold: float = 1e-4,
    keep_seeds: bool = True,
    progress=None,
) -> dict:
    """Deterministic union CSLS self-learning from the map (Wx, Wz), then the multi-step fit (module docstring).

    Returns a dict: ``Wx``, ``Wz`` (the final multi-step maps), ``pairs`` (the last dictionary: union pairs, then
    the seeds when ``keep_seeds``), ``history`` (one record per induction: objective, improved, dictionary size,
    seconds), ``stopped_by`` ("converged" or "max_iter") and ``final_fit`` ("multistep" or "orthogonal").
    """
    from services.alignment.walip_self_learning import _sl_induce

    if int(max_iter) < 1 or float(threshold) < 0:
        raise InvalidInput("final stage: max_iter must be at least 1 and threshold non-negative",
                           detail={"final_iters": max_iter, "final_threshold": threshold})
    X, Y = _unit(X), _unit(Y)
    seeds = np.asarray(seed_pairs, dtype=np.int64).reshape(-1, 2)
    n = len(X) if vocab is None else min(len(X), int(vocab))
    m = len(Y) if vocab is None else min(len(Y), int(vocab))
    Xv, Yv = X[:n], Y[:m]
    xw, zw = _unit(Xv @ np.asarray(Wx, np.float32)), _unit(Yv @ np.asarray(Wz, np.float32))
    rng = np.random.default_rng(0)  # unused at keep = 1 (no drops); _sl_induce wants one
    best = -np.inf
    history: list[dict] = []
    stopped_by = "max_iter"
    pairs = seeds
    for it in range(1, int(max_iter) + 1):
        started = time.perf_counter()
        ind = _sl_induce(xw, zw, keep=1.0, knn=int(knn), direction="union", rng=rng)
        src = np.concatenate([np.arange(n, dtype=np.int64), ind["bwd"]])
        trg = np.concatenate([ind["fwd"], np.arange(m, dtype=np.int64)])
        pairs = np.stack([src, trg], axis=1)
        if keep_seeds and len(seeds):
            pairs = np.concatenate([pairs, seeds])
        objective = float((np.mean(ind["best_fwd"], dtype=np.float64) + np.mean(ind["best_bwd"], dtype=np.float64)) / 2)
        # the first induction is in the incoming (multi-step) space: not comparable, never a stall
        improved = it == 1 or objective - best >= float(threshold)
        record = {"iteration": it, "objective": objective, "improved": bool(improved), "dictionary_pairs": int(len(pairs)),
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if progress is not None:
            progress("walip-final", it, int(max_iter), dict(record))
        if not improved:
            stopped_by = "converged"
            break
        best = -np.inf if it == 1 else max(best, objective)
        if it == int(max_iter):
            break
        W = procrustes(X[pairs[:, 0]], Y[pairs[:, 1]]).astype(np.float32)
        xw, zw = _unit(Xv @ W), Yv
    Wx_f, Wz_f, final_fit = _multistep_or_orthogonal(X[pairs[:, 0]], Y[pairs[:, 1]])
    return {"Wx": Wx_f, "Wz": Wz_f, "pairs": pairs, "history": history, "stopped_by": stopped_by, "final_fit": final_fit}


def with_final_stage(res, X: np.ndarray, Y: np.ndarray, seed_pairs: np.ndarray, *, max_vocab: int | None = 10000,
                     knn: int = 10, final_stage: str = "union", final_iters: int = 20, final_threshold: float = 1e-4,
                     progress=None):
    """The confident rounds' :class:`~services.alignment.walip.WalipResult` ``res`` continued by the final stage.

    ``final_stage="none"`` returns ``res`` unchanged (the ``confident`` variant before issue 15's final stage).
    Otherwise :func:`union_refine` over the rounds' ``max_vocab`` words from (res.W, res.Wz); the result's ``pairs``
    are the mutual CSLS pairs of the final maps (best first, as the rounds'), its history the rounds' records
    followed by the stage's (``"stage": "final"``), ``validation_losses`` the rounds' then 1 − objective per induction.
    """
    from services.alignment.retrieval import mutual_nn
    from services.alignment.walip import WalipResult

    if final_stage not in FINAL_STAGES:
        raise InvalidInput(f"unknown final_stage {final_stage!r}; known: {', '.join(FINAL_STAGES)}",
                           detail={"field": "final_stage", "known": list(FINAL_STAGES)})
    if final_stage == "none":
        return res
    Wz = res.Wz if res.Wz is not None else np.eye(Y.shape[1], dtype=np.float32)
    out = union_refine(X, Y, res.W, Wz, seed_pairs, vocab=max_vocab, knn=knn, max_iter=final_iters,
                       threshold=final_threshold, progress=progress)
    n = len(X) if max_vocab is None else min(len(X), int(max_vocab))
    m = len(Y) if max_vocab is None else min(len(Y), int(max_vocab))
    final, scores = mutual_nn(_unit(_unit(X[:n]) @ out["Wx"]), _unit(_unit(Y[:m]) @ out["Wz"]), retrieval="csls",
                              knn=max(int(knn), 1))
    stage = [{**h, "stage": "final"} for h in out["history"]]
    if stage:
        stage[-1].update({"stopped_by": out["stopped_by"], "final_fit": out["final_fit"],
                          "pairs_fit": int(len(out["pairs"]))})
    losses = list(res.validation_losses) + [1.0 - h["objective"] for h in out["history"]]
    return WalipResult(out["Wx"], final, scores, losses, len(losses) - 1, list(res.history) + stage, out["Wz"])
