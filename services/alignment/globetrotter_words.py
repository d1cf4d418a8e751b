"""Word translation from a trained Globetrotter space (methods.md, Globetrotter: "Word translation:
Procrustes on the learnt word embeddings with anchors = mutual nearest neighbours (k = 5)").

A Globetrotter checkpoint with a static word-vector tower per language (models/globetrotter.py) maps each
language's caption vectors into one space learnt through photos alone. A single word is a one-word caption:
its learnt embedding is the language's text head applied to its (unit) vector. Here:

1. embed the ``max_vocab`` most frequent words of each side with the source and target text heads;
2. anchors = mutual nearest neighbours of the two learnt embeddings, by CSLS with neighbourhood k = 5
   (``retrieval: nn`` for plain cosine);
3. orthogonal Procrustes on the *original* word spaces over the anchors: x ↦ x W, a mapping like any other
   (served, refined by ``+l1``, evaluated).

Registered as ``globetrotter`` in services/alignment/registry.py (needs ``checkpoint``, ``src_lang``,
``tgt_lang``; no seed dictionary: only photos connect the languages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from services.errors import InvalidInput

def check(opts: dict[str, Any]) -> None:
    """Options are checked before any work (a job is refused with 422, not failed later)."""
    for key in ("checkpoint", "src_lang", "tgt_lang"):
        if not isinstance(opts.get(key), str) or not opts[key].strip():
            raise InvalidInput(f"globetrotter needs option {key}", detail={"field": f"options.{key}"})
    if not Path(opts["checkpoint"]).is_file():
        raise InvalidInput("options.checkpoint: no such Globetrotter checkpoint file", detail={"field": "options.checkpoint"})
    if opts["retrieval"] not in ("csls", "nn"):
        raise InvalidInput("options.retrieval must be csls or nn", detail={"field": "options.retrieval"})
    for key in ("k", "max_vocab"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"options.{key} must be an integer >= 1", detail={"field": f"options.{key}"})


def _head(checkpoint: Any, lang: str, dim: int):
    from models.globetrotter import ANY_LANGUAGE

    heads = checkpoint.heads
    if lang not in heads.config.text_dims:
        has_any = ANY_LANGUAGE in heads.config.text_dims
        raise InvalidInput(f"the checkpoint has no {lang!r} word-vector tower"
                           + (" (its text tower is a multilingual encoder, not word vectors)" if has_any else ""),
                           detail={"field": "options.src_lang", "languages": sorted(heads.config.text_dims)})
    if heads.config.text_dims[lang] != dim:
        raise InvalidInput(f"the checkpoint's {lang} head takes {heads.config.text_dims[lang]}-d vectors; the space "
                           f"is {dim}-d", detail={"field": "options.checkpoint"})
    return lambda x: heads.embed_texts(x, lang)


def learnt_embeddings(checkpoint: Any, X: np.ndarray, lang: str) -> np.ndarray:
    """Rows of X (words) -> unit rows of the learnt space through ``lang``'s text head."""
    from models.globetrotter import project

    X = np.asarray(X, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # the tower's unit word vectors
    return project(_head(checkpoint, lang, X.shape[1]), X)


def fit_globetrotter_words(X: np.ndarray, Y: np.ndarray, opts: dict[str, Any], progress=None
                           ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(W, anchor pairs (p, 2), stats): Procrustes over mutual-NN anchors found in the learnt space."""
    from models.globetrotter import read_checkpoint
    from services.alignment.procrustes import procrustes
    from services.alignment.retrieval import mutual_nn

    check(opts)
    ckpt = read_checkpoint(opts["checkpoint"])
    n = int(opts["max_vocab"])
    if progress is not None:
        progress("globetrotter", 0, 2, {})
    Zx = learnt_embeddings(ckpt, X[:n], opts["src_lang"])
    Zy = learnt_embeddings(ckpt, Y[:n], opts["tgt_lang"])
    pairs, scores = mutual_nn(Zx, Zy, retrieval=opts["retrieval"], knn=int(opts["k"]))
    if len(pairs) < 2:
        raise InvalidInput("the learnt space gives fewer than 2 mutual nearest-neighbour anchors",
                           detail={"field": "options.checkpoint"})
    W = procrustes(np.asarray(X, np.float64)[pairs[:, 0]], np.asarray(Y, np.float64)[pairs[:, 1]])
    if progress is not None:
        progress("globetrotter", 2, 2, {"anchors": len(pairs)})
    stats = {"anchors": int(len(pairs)), "anchor_score_median": float(np.median(scores)),
             "checkpoint_version": ckpt.version, "src_lang": opts["src_lang"], "tgt_lang": opts["tgt_lang"],
             "retrieval": opts["retrieval"], "k": int(opts["k"])}
    return W, pairs, stats
