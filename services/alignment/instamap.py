"""InstaMap: Kabsch rotation + per-word translation vectors + mutual-NN dictionary expansion (methods.md, "InstaMap").

``variant="paper"`` (default): T = 4 iterations, K = 70; each iteration fits Kabsch on the dictionary,
rotates the source, shifts every source by the cosine-weighted mean of (y_k − x_k) over its K nearest
dictionary sources and every target by minus the same over its K nearest dictionary targets, then
EXTENDS the dictionary with mutual NN (CSLS) pairs of the new space over the ``expand_vocab`` most
frequent words. ``variant="code"`` (authors' release): centred PCA (290 components) of both spaces
each iteration, 3 iterations, dictionary REPLACED by plain-cosine mutual NN.

Deviation (documented): applying the full shift to both sides would swap them (x + δ ≈ y while
y − δ ≈ x, so x' − y' ≈ −(x − y) and nothing is gained); by default each side moves half-way
(``src_step = tgt_step = 0.5``: they meet in the middle, the dictionary residual x' − y' ≈ 0).
``src_step=1, tgt_step=1`` gives the literal update, ``tgt_step=0`` moves only the source.
Rows are re-normalised after each iteration so cosine neighbourhoods stay meaningful.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from services.alignment.mapping import InstaMapIteration, InstaMapStage, _unit
from services.alignment.procrustes import kabsch
from services.errors import InvalidInput

__all__ = ["fit_instamap"]

ProgressFn = Callable[[str, int, int, dict], None]


def _pca(V: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    mean = V.mean(axis=0)
    C = np.asarray(V - mean, np.float64)
    _, _, Vt = np.linalg.svd(C.T @ C)
    return mean.astype(np.float32), Vt[:n_components].T.astype(np.float32)


def fit_instamap(
    X: np.ndarray,
    Y: np.ndarray,
    pairs: np.ndarray,
    *,
    K: int = 70,
    T: int | None = None,
    variant: str = "paper",
    src_step: float = 0.5,
    tgt_step: float = 0.5,
    expand: bool = True,
    expand_vocab: int | None = 20000,
    expand_retrieval: str | None = None,
    pca_components: int = 290,
    progress: ProgressFn | None = None,
) -> tuple[InstaMapStage, np.ndarray, list[dict]]:
    """Fit InstaMap on unit rows X, Y and dictionary ``pairs``: (stage, final dictionary, per-iteration history)."""
    from services.alignment.retrieval import mutual_nn

    if variant not in ("paper", "code"):
        raise InvalidInput(f"unknown InstaMap variant {variant!r}; use 'paper' or 'code'")
    T = int(T if T is not None else (4 if variant == "paper" else 3))
    if T < 1 or K < 1:
        raise InvalidInput("InstaMap needs T ≥ 1 and K ≥ 1")
    pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    if len(pairs) == 0:
        raise InvalidInput("InstaMap needs a non-empty seed dictionary")
    retrieval = expand_retrieval or ("csls" if variant == "paper" else "nn")
    stage = InstaMapStage([], K=K, src_step=src_step, tgt_step=tgt_step, renormalize=True)
    Xc, Yc = _unit(X), _unit(Y)
    history: list[dict] = []
    for t in range(T):
        it = InstaMapIteration(W_R=np.eye(Xc.shape[1]), src_anchors=np.zeros((0, 1)), tgt_anchors=np.zeros((0, 1)),
                               deltas=np.zeros((0, 1)))
        Xp, Yp = Xc, Yc
        if variant == "code":
            dims = min(pca_components, Xc.shape[1])
            it.src_mean, it.src_proj = _pca(Xc, dims)
            it.tgt_mean, it.tgt_proj = _pca(Yc, dims)
            Xp = ((Xc - it.src_mean) @ it.src_proj).astype(np.float32)
            Yp = ((Yc - it.tgt_mean) @ it.tgt_proj).astype(np.float32)
        it.W_R = kabsch(Xp[pairs[:, 0]], Yp[pairs[:, 1]])
        XR = (Xp @ it.W_R.astype(np.float32)).astype(np.float32)
        it.src_anchors = XR[pairs[:, 0]].copy()
        it.tgt_anchors = Yp[pairs[:, 1]].copy()
        it.deltas = (it.tgt_anchors - it.src_anchors).astype(np.float32)
        stage.iterations.append(it)
        # The fitted space is produced by the very code that later translates new words.
        Xc = stage.source_step(Xc, it)
        Yc = stage.target_step(Yc, it)
        residual = float(np.mean(np.sum((Xc[pairs[:, 0]] - Yc[pairs[:, 1]]) ** 2, axis=1)))
        record = {"iteration": t + 1, "pairs": int(len(pairs)), "dictionary_residual": residual}
        if expand and t < T - 1:
            new_pairs, _ = mutual_nn(Xc, Yc, retrieval=retrieval, max_src=expand_vocab, max_tgt=expand_vocab)
            pairs = new_pairs if variant == "code" else np.unique(np.vstack([pairs, new_pairs]), axis=0)
            if len(pairs) == 0:
                raise InvalidInput("InstaMap dictionary became empty after mutual-NN replacement")
            record["pairs_next"] = int(len(pairs))
        history.append(record)
        if progress is not None:
            progress("instamap", t + 1, T, dict(record))
    return stage, pairs, history
