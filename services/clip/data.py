"""Captioned photo sets: a folder of images + a TSV of ``image<TAB>caption`` lines (several per image, any language).

:func:`load_captioned_set` validates everything a training run would otherwise trip on late:
an empty TSV, a line without a tab, captions naming images that are not in the folder -- each a
clear :class:`InvalidInput` naming the first offenders. :func:`split_images` carves a seeded,
image-level validation split (captions of one photo never straddle the split).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.errors import InvalidInput, NotFound

MAX_CAPTION_CHARS = 2_000
MAX_CAPTION_LINES = 2_000_000


@dataclass
class CaptionedSet:
    """``images[i]`` is a file name in ``images_dir``; caption ``j`` describes image ``owner[j]``."""

    images_dir: Path
    images: list[str]
    captions: list[str]
    owner: np.ndarray  # (M,) int64 index into images

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, image_idx: np.ndarray) -> "CaptionedSet":
        """The images ``image_idx`` (in that order) with all their captions."""
        image_idx = np.asarray(image_idx, dtype=np.int64)
        remap = np.full(len(self.images), -1, dtype=np.int64)
        remap[image_idx] = np.arange(len(image_idx))
        keep = np.flatnonzero(remap[self.owner] >= 0)
        return CaptionedSet(self.images_dir, [self.images[i] for i in image_idx],
                            [self.captions[j] for j in keep], remap[self.owner[keep]])


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _read_tab_pairs(path: str | os.PathLike, field: str, what: str, layout: str) -> list[tuple[str, str]]:
    """``(left, right)`` pairs of a TSV file (``layout``, e.g. 'image<TAB>caption'); blank lines skipped; bounded
    line count and length; InvalidInput/NotFound naming ``field``."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"{what} {p.name} does not exist", detail={"field": field})
    pairs: list[tuple[str, str]] = []
    bad: list[int] = []
    try:
        with _open_text(p) as fh:
            for lineno, line in enumerate(fh, 1):
                if lineno > MAX_CAPTION_LINES:
                    raise InvalidInput(f"{what} has more than {MAX_CAPTION_LINES} lines",
                                       detail={"field": field, "max_lines": MAX_CAPTION_LINES})
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                left, sep, right = line.partition("\t")
                left, right = left.strip(), right.strip()
                if not sep or not left or not right or len(right) > MAX_CAPTION_CHARS or len(left) > MAX_CAPTION_CHARS:
                    bad.append(lineno)
                    continue
                pairs.append((left, right))
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{what} is not UTF-8 text: {e.reason}", detail={"field": field}) from e
    if bad:
        raise InvalidInput(f"{what}: {len(bad)} line(s) are not '{layout}' (first: line {bad[0]})",
                           detail={"field": field, "lines": bad[:10]})
    if not pairs:
        raise InvalidInput(f"{what} holds no '{layout}' lines", detail={"field": field})
    return pairs


def read_caption_tsv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(image, caption)`` pairs of a TSV file; blank lines skipped; bounded line count and length."""
    return _read_tab_pairs(path, "captions", "captions file", "image<TAB>caption")


def read_translation_tsv(path: str | os.PathLike, field: str = "translations") -> list[tuple[str, str]]:
    """``(source, translation)`` pairs of a TSV file (text-only translation pairs: a sentence in the captions'
    language and its translation, no photo); same bounds as :func:`read_caption_tsv`."""
    return _read_tab_pairs(path, field, "translations file", "source<TAB>translation")


def load_captioned_set(images_dir: str | os.PathLike, captions: str | os.PathLike | Sequence[tuple[str, str]]
                       ) -> CaptionedSet:
    """The photos of ``images_dir`` that the captions name, in first-mention order, with their captions."""
    d = Path(images_dir)
    if not d.is_dir():
        raise NotFound(f"image folder {d.name} does not exist", detail={"field": "images_dir"})
    pairs = read_caption_tsv(captions) if isinstance(captions, (str, os.PathLike)) else list(captions)
    if not pairs:
        raise InvalidInput("no captions given", detail={"field": "captions"})
    present = {p.name for p in d.iterdir() if p.is_file()}
    names: dict[str, int] = {}
    owner = np.empty(len(pairs), dtype=np.int64)
    missing: list[str] = []
    for j, (image, _) in enumerate(pairs):
        if image not in present:
            if len(missing) < 10 and image not in missing:
                missing.append(image)
            owner[j] = -1
            continue
        owner[j] = names.setdefault(image, len(names))
    if missing:
        n_missing = len({img for img, _ in pairs if img not in present})
        raise InvalidInput(f"captions name {n_missing} image(s) not in the image folder (first: {missing[0]})",
                           detail={"field": "captions", "missing": missing})
    return CaptionedSet(d, list(names), [c for _, c in pairs], owner)


def split_images(n_images: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) image indices: a seeded permutation; ``val_fraction`` 0 gives no validation split."""
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidInput("val_fraction must be in [0, 1)", detail={"field": "val_fraction"})
    perm = np.random.default_rng(seed).permutation(n_images)
    n_val = int(round(n_images * val_fraction))
    if val_fraction > 0 and (n_val < 1 or n_images - n_val < 2):
        raise InvalidInput(f"{n_images} images are too few for val_fraction {val_fraction}",
                           detail={"field": "val_fraction", "images": n_images})
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
