"""Languages in compact-CLIP training: per-language maps after centring, and per-language caption sampling.

A multilingual sentence encoder shifts each language (the means that models.compact_clip.TextCentres
subtracts), but a language's rows also differ from the pivot language's (the one with most captions,
English on Flickr8k) in *shape*: a shared linear text head, trained mostly on the pivot, reads them
through directions fitted to the pivot's spread. Two per-language linear maps, each fitted on the
*training* photos' captions only and stored in the checkpoint (applied after the centring, in training
and at query time alike; the pivot keeps the identity):

* ``coral`` -- second-moment matching (CORAL, Sun, Feng & Saenko 2016, "Return of frustratingly easy
  domain adaptation", eq. 1-5): whiten a language's centred rows with its own covariance, re-colour
  with the pivot's. Needs no pairing of captions. Covariances are shrunk towards their mean
  eigenvalue (``shrink``) so weak directions are not blown up.
* ``map`` -- a ridge regression from a language's centred caption rows to the mean centred pivot row
  of the same photo (captions of one photo in several languages are the supervision; no translation
  pairs needed), shrunk towards the identity: ``A = (X'X + l I)^-1 (X'Y + l I)`` with ``l`` the mean
  eigenvalue of ``X'X`` times ``ridge``. With translation pairs (:func:`fit_pair_maps`, training option
  ``map_target="translation"``): the same ridge map, but each caption regressed onto its own source
  caption's centred row (Multi30K: each German/French/Czech caption onto the English caption it
  translates) instead of onto the photo's mean pivot row.

Per-language sampling (``captions="per-language"``): each step takes, for every photo of the batch,
one caption drawn at random in each of its languages, so a photo's five English captions and its one
German caption enter the loss 1:1 (all English captions are still seen over the epochs).
"""

from __future__ import annotations

import numpy as np

MAP_KINDS = ("coral", "map")


def pivot_language(languages: np.ndarray) -> str:
    """The language with the most rows (ties: the first in sorted order)."""
    langs, counts = np.unique(np.asarray(languages, dtype=object).astype(str), return_counts=True)
    return str(langs[int(np.argmax(counts))])


def _sym_power(c: np.ndarray, power: float) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    vals = np.maximum(vals, 1e-12)
    return (vecs * vals ** power) @ vecs.T


def _shrunk_cov(x: np.ndarray, shrink: float) -> np.ndarray:
    x = x - x.mean(axis=0)
    c = x.T @ x / max(len(x) - 1, 1)
    mu = np.trace(c) / len(c)
    return (1.0 - shrink) * c + shrink * mu * np.eye(len(c))


def coral_map(x_lang: np.ndarray, x_pivot: np.ndarray, shrink: float = 0.1) -> np.ndarray:
    """``A`` with ``cov(x_lang @ A) = cov(x_pivot)`` (both covariances shrunk): ``C_l^-1/2 C_p^1/2``."""
    c_l = _shrunk_cov(np.asarray(x_lang, dtype=np.float64), shrink)
    c_p = _shrunk_cov(np.asarray(x_pivot, dtype=np.float64), shrink)
    return _sym_power(c_l, -0.5) @ _sym_power(c_p, 0.5)


def ridge_map(x: np.ndarray, y: np.ndarray, lam: float | None = None) -> np.ndarray:
    """``argmin_A |x A - y|^2 + lam |A - I|^2`` (``lam`` default: the mean eigenvalue of ``x'x``)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = x.T @ x
    lam = float(np.trace(g) / len(g)) if lam is None else float(lam)
    eye = np.eye(len(g))
    return np.linalg.solve(g + lam * eye, x.T @ y + lam * eye)


def fit_language_maps(feats: np.ndarray, owner: np.ndarray, languages: np.ndarray, kind: str,
                      shrink: float = 0.1, ridge: float = 1.0) -> dict[str, np.ndarray]:
    """Per non-pivot language, its map (``kind`` in MAP_KINDS) from *centred* training rows ``feats``
    (``owner``: each row's photo; ``languages``: each row's code). Languages with fewer rows than
    dimensions (or, for ``map``, no photo shared with the pivot) get none. ``ridge``: the ``map`` shrinkage in
    units of the mean eigenvalue of ``X'X``."""
    if kind not in MAP_KINDS:
        raise ValueError(f"map kind must be one of {MAP_KINDS}")
    feats = np.asarray(feats, dtype=np.float32)
    owner = np.asarray(owner, dtype=np.int64)
    langs = np.asarray(languages, dtype=object).astype(str)
    pivot = pivot_language(langs)
    is_pivot = langs == pivot
    maps: dict[str, np.ndarray] = {}
    if kind == "map":  # each photo's mean pivot row
        n_img = int(owner.max()) + 1
        sums = np.zeros((n_img, feats.shape[1]), dtype=np.float64)
        np.add.at(sums, owner[is_pivot], feats[is_pivot])
        counts = np.bincount(owner[is_pivot], minlength=n_img)
    for lang in sorted(set(langs.tolist()) - {pivot, ""}):
        rows = np.flatnonzero(langs == lang)
        if kind == "coral":
            if len(rows) > feats.shape[1]:
                maps[lang] = coral_map(feats[rows], feats[is_pivot], shrink).astype(np.float32)
            continue
        rows = rows[counts[owner[rows]] > 0]
        if len(rows) > feats.shape[1]:
            maps[lang] = _shrunk_ridge_map(feats[rows], sums[owner[rows]] / counts[owner[rows], None], ridge)
    return maps


def _shrunk_ridge_map(x: np.ndarray, target: np.ndarray, ridge: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    lam = ridge * float(np.einsum("ij,ij->", x, x)) / x.shape[1]  # ridge x the mean eigenvalue of x'x
    return ridge_map(x, target, lam).astype(np.float32)


def fit_pair_maps(tgt: np.ndarray, src: np.ndarray, tgt_languages: np.ndarray, ridge: float = 1.0
                  ) -> dict[str, np.ndarray]:
    """Per language of ``tgt_languages``: the ridge map (shrunk to the identity, ``ridge`` as in
    :func:`fit_language_maps`) from *centred* rows ``tgt`` onto the *centred* rows ``src`` they translate
    (row i of ``tgt`` is a translation of row i of ``src``). Languages with fewer pairs than dimensions get none."""
    tgt = np.asarray(tgt, dtype=np.float32)
    src = np.asarray(src, dtype=np.float32)
    if tgt.shape != src.shape:
        raise ValueError(f"translation pairs need rows of one shape, got {tgt.shape} and {src.shape}")
    langs = np.asarray(tgt_languages, dtype=object).astype(str)
    maps: dict[str, np.ndarray] = {}
    for lang in sorted(set(langs.tolist()) - {""}):
        rows = np.flatnonzero(langs == lang)
        if len(rows) > tgt.shape[1]:
            maps[lang] = _shrunk_ridge_map(tgt[rows], src[rows], ridge)
    return maps


def one_caption_per_language(caption_owner: np.ndarray, caption_codes: np.ndarray,
                             rng: np.random.Generator) -> np.ndarray:
    """Positions (sorted) of one caption drawn at random per (photo, language) group of a batch's captions."""
    caption_owner = np.asarray(caption_owner, dtype=np.int64)
    codes = np.asarray(caption_codes, dtype=np.int64)
    if len(caption_owner) == 0:
        return np.zeros(0, dtype=np.int64)
    key = caption_owner * (int(codes.max()) + 1) + codes
    order = np.lexsort((rng.random(len(key)), key))
    last = np.r_[key[order][1:] != key[order][:-1], True]
    return np.sort(order[last])
