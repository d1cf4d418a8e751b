"""Training data for Globetrotter: photos whose captions are each in ONE language, and the tower features.

A :class:`MultilingualCaptions` merges one ``image<TAB>caption`` TSV per language (services/clip/data.py)
over one image folder. The method's premise is checked, not assumed: a photo captioned in two languages
would hand the model a translation pair, so the languages' photo sets must be disjoint (InvalidInput
naming the first shared photos otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.clip.data import load_captioned_set, read_caption_tsv
from services.errors import InvalidInput

Progress = Callable[[str, int, int, dict | None], None]


@dataclass
class MultilingualCaptions:
    """``images[i]`` in ``images_dir``; caption j (``captions[j]``, language ``langs[lang_of[j]]``) describes ``owner[j]``."""

    images_dir: Path
    images: list[str]
    langs: list[str]
    captions: list[str]
    owner: np.ndarray  # (M,) int64
    lang_of: np.ndarray  # (M,) int64 index into langs
    image_lang: np.ndarray = field(default=None)  # (I,) the language of each photo's captions

    def __post_init__(self) -> None:
        if self.image_lang is None:
            self.image_lang = np.full(len(self.images), -1, dtype=np.int64)
            self.image_lang[self.owner] = self.lang_of

    def captions_of(self, lang: str) -> np.ndarray:
        return np.flatnonzero(self.lang_of == self.langs.index(lang))

    def summary(self) -> dict[str, Any]:
        out = {}
        for li, lang in enumerate(self.langs):
            out[lang] = {"images": int((self.image_lang == li).sum()), "captions": int((self.lang_of == li).sum())}
        return out


def load_multilingual(images_dir: str | os.PathLike, captions: dict[str, Any]) -> MultilingualCaptions:
    """One captioned set per language (a TSV path, or (image, caption) pairs), photos disjoint across languages."""
    if not captions:
        raise InvalidInput("give captions in at least one language (LANG=TSV)", detail={"field": "captions"})
    owner_of: dict[str, int] = {}
    images: list[str] = []
    caps: list[str] = []
    owners: list[np.ndarray] = []
    lang_of: list[np.ndarray] = []
    seen_in: dict[str, str] = {}
    base = None
    for li, (lang, source) in enumerate(sorted(captions.items())):
        pairs = read_caption_tsv(source) if isinstance(source, (str, os.PathLike)) else list(source)
        part = load_captioned_set(images_dir, pairs)
        base = part.images_dir
        shared = [im for im in part.images if im in seen_in]
        if shared:
            raise InvalidInput(f"{len(shared)} photo(s) have captions in both {seen_in[shared[0]]} and {lang} "
                               f"(first: {shared[0]}): Globetrotter learns from photos captioned in ONE language",
                               detail={"field": f"captions.{lang}", "shared": shared[:10]})
        remap = np.empty(len(part.images), dtype=np.int64)
        for i, image in enumerate(part.images):
            seen_in[image] = lang
            remap[i] = owner_of.setdefault(image, len(images))
            if remap[i] == len(images):
                images.append(image)
        caps.extend(part.captions)
        owners.append(remap[part.owner])
        lang_of.append(np.full(len(part.captions), li, dtype=np.int64))
    return MultilingualCaptions(base, images, sorted(captions), caps, np.concatenate(owners), np.concatenate(lang_of))


def split_by_language(data: MultilingualCaptions, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) photo indices: a seeded share of each language's photos held out for validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidInput("val_fraction must be in [0, 1)", detail={"field": "val_fraction"})
    rng = np.random.default_rng(seed)
    train, val = [], []
    for li in range(len(data.langs)):
        photos = rng.permutation(np.flatnonzero(data.image_lang == li))
        n_val = int(round(len(photos) * val_fraction))
        if val_fraction > 0 and len(photos) - n_val < 2:
            raise InvalidInput(f"too few {data.langs[li]} photos for val_fraction {val_fraction}",
                               detail={"field": "val_fraction", "images": int(len(photos))})
        val.append(photos[:n_val])
        train.append(photos[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def tower_features(data: MultilingualCaptions, towers: dict[str, Any], *, cache_dir: str | os.PathLike | None,
                   progress: Progress | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({lang: (captions of lang, dim) features}, row of each caption in its language's matrix)."""
    from models.globetrotter import ANY_LANGUAGE
    from services.clip.features import text_features

    feats: dict[str, np.ndarray] = {}
    row = np.empty(len(data.captions), dtype=np.int64)
    for lang in data.langs:
        idx = data.captions_of(lang)
        tower = towers.get(lang) or towers.get(ANY_LANGUAGE)
        if tower is None:
            raise InvalidInput(f"no text tower for {lang!r} captions", detail={"field": "text_towers",
                                                                            "languages": sorted(towers)})
        feats[lang], _ = text_features(tower, [data.captions[j] for j in idx], cache_dir=cache_dir, progress=progress)
        row[idx] = np.arange(len(idx))
    return feats, row
