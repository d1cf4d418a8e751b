"""Retrieval recall and zero-shot classification for a CLIP space (pure functions, chunked).

Text -> image: each caption's own image ranked among all images. Image -> text: the best rank of
any of the image's captions among all captions (the Flickr8k protocol of Karpathy & Fei-Fei 2015,
section 4: R@K = share of queries with a correct item in the top K).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

KS = (1, 5, 10)


def _ranks_of_targets(queries: np.ndarray, bank: np.ndarray, target: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """0-based rank of ``bank[target[i]]`` among all of ``bank`` for query i (ties count against it)."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        s = queries[start:start + chunk] @ bank.T
        own = s[np.arange(len(s)), target[start:start + chunk]]
        ranks[start:start + chunk] = (s > own[:, None]).sum(axis=1)
    return ranks


def recall_at(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    return {f"r@{k}": round(100.0 * float(np.mean(ranks < k)), 2) for k in ks}


def retrieval_recall(image_emb: np.ndarray, text_emb: np.ndarray, owner: np.ndarray,
                     ks: Sequence[int] = KS, chunk: int = 4096) -> dict[str, dict[str, float]]:
    """{"t2i": {"r@1": ..}, "i2t": {..}} in percent, for unit rows and ``owner[j]`` = caption j's image."""
    owner = np.asarray(owner, dtype=np.int64)
    t2i = _ranks_of_targets(text_emb, image_emb, owner, chunk)
    # image -> text: best rank over the image's captions = count of captions scoring above its best one.
    i2t = np.empty(len(image_emb), dtype=np.int64)
    for start in range(0, len(image_emb), chunk):
        s = image_emb[start:start + chunk] @ text_emb.T  # (c, M)
        rows = owner - start
        mine = (rows >= 0) & (rows < len(s))
        best = np.full(len(s), -np.inf, dtype=np.float32)
        np.maximum.at(best, rows[mine], s[rows[mine], np.flatnonzero(mine)])
        i2t[start:start + chunk] = (s > best[:, None]).sum(axis=1)
    return {"t2i": recall_at(t2i, ks), "i2t": recall_at(i2t, ks)}


def mean_recall(metrics: dict[str, dict[str, float]]) -> float:
    """The early-stopping criterion: mean of every R@K in both directions."""
    values = [v for direction in metrics.values() for v in direction.values()]
    return float(np.mean(values)) if values else 0.0


def zero_shot_top1(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (percent) of nearest class embedding; ``labels[i]`` = image i's class row."""
    pred = np.argmax(image_emb @ class_emb.T, axis=1)
    return round(100.0 * float(np.mean(pred == np.asarray(labels))), 2)


def load_babel_classnames(path, lang: str) -> tuple[np.ndarray, list[str]]:
    """(ImageNet-1k class indices, names) of ``lang`` from a Babel-ImageNet JSON (keys are upper-case codes)."""
    import json
    from pathlib import Path

    from services.errors import InvalidInput

    table = json.loads(Path(path).read_text(encoding="utf-8"))
    key = lang.upper()
    if key not in table:
        raise InvalidInput(f"no ImageNet class names for language {lang!r}",
                           detail={"field": "lang", "known": sorted(k.lower() for k in table)})
    indices, names = table[key]
    return np.asarray(indices, dtype=np.int64), list(names)


def imagenet_sample_labels(names: Sequence[str]) -> np.ndarray:
    """Class index of each ``<wnid>_<name>.JPEG`` sample: ImageNet-1k indices follow the sorted wnids."""
    wnids = [n.split("_", 1)[0] for n in names]
    order = {w: i for i, w in enumerate(sorted(set(wnids)))}
    return np.asarray([order[w] for w in wnids], dtype=np.int64)


def zero_shot_classify(image_emb: np.ndarray, image_labels: np.ndarray, class_ids: np.ndarray,
                       class_emb: np.ndarray) -> dict[str, float | int]:
    """Top-1 over the classes that have a name (Babel-ImageNet protocol): images of other classes are left out."""
    pos = np.full(max(int(image_labels.max()), int(class_ids.max())) + 1, -1, dtype=np.int64)
    pos[class_ids] = np.arange(len(class_ids))
    keep = pos[image_labels] >= 0
    top1 = zero_shot_top1(image_emb[keep], class_emb, pos[image_labels[keep]])
    return {"top1": top1, "classes": int(len(class_ids)), "images": int(keep.sum()),
            "chance": round(100.0 / max(1, len(class_ids)), 3)}
