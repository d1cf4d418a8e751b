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
"""

from __future__ import annotations

from collections.abc import Callable

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
    src_step: float | None = None,
    tgt_step: float | None = None,
    expand: bool = True,
    expand_vocab: int | None = None,
    expand_retrieval: str | None = None,
    pca_components: int = 290,
    progress: ProgressFn | None = None,
) -> tuple[InstaMapStage, np.ndarray, list[dict]]:
    """Fit InstaMap on unit rows X, Y and dictionary ``pairs``: (stage, final dictionary, per-iteration history).

    Defaults (None) follow the variant (methods.md, "InstaMap"): ``T`` 4 (paper) / 3 (code);
    ``src_step``/``tgt_step`` 1 and 1 (both variants; only the paper variant accepts other values);
    ``expand_vocab`` 20,000 (paper) / the whole vocabularies (code, which accepts no cap).
    """
    from services.alignment.retrieval import mutual_nn

    if variant not in ("paper", "code"):
        raise InvalidInput(f"unknown InstaMap variant {variant!r}; use 'paper' or 'code'")
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
        record = {"iteration": t + 1, "pairs": len(pairs), "dictionary_residual": residual}
        if expand and t < T - 1:
            new_pairs, _ = mutual_nn(Xc, Yc, retrieval=retrieval, max_src=expand_vocab, max_tgt=expand_vocab)
            pairs = new_pairs if variant == "code" else np.unique(np.vstack([pairs, new_pairs]), axis=0)
            if len(pairs) == 0:
                raise InvalidInput("InstaMap dictionary became empty after mutual-NN replacement")
            record["pairs_next"] = len(pairs)
        history.append(record)
        if progress is not None:
            progress("instamap", t + 1, T, dict(record))
    return stage, pairs, history
