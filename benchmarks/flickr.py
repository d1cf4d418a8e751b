"""The shared captioned photos for benchmarks: Flickr8k (English) + Multi30K (de, fr, cs) captions of the same photos.

Reads ``../shared/data`` (see its README): ``images/flickr8k/`` (7,091 photos named
``<flickr id>_<secret>.jpg``), ``captions/flickr8k/captions.tsv`` (5 English captions each) and
``captions/multi30k/train.{en,de,fr,cs}.gz`` + ``train.txt`` (one caption per photo per language,
photos named ``<flickr id>.jpg``). The fixed dev split is 1,000 photos drawn with a fixed seed;
benchmarks train on the rest and never choose a setting on the dev photos.
"""

from __future__ import annotations

import gzip
from functools import lru_cache

import numpy as np

from benchmarks.common import shared_path
from services.clip.data import CaptionedSet, load_captioned_set

DEV_SEED = 2026
DEV_IMAGES = 1000


def available() -> bool:
    return shared_path("images", "flickr8k") is not None and shared_path("captions", "flickr8k", "captions.tsv") is not None


@lru_cache(maxsize=1)
def flickr8k() -> CaptionedSet:
    return load_captioned_set(shared_path("images", "flickr8k"), shared_path("captions", "flickr8k", "captions.tsv"))


def dev_split(n_images: int, n_dev: int = DEV_IMAGES, seed: int = DEV_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, dev) image indices of the fixed benchmark split."""
    perm = np.random.default_rng(seed).permutation(n_images)
    return np.sort(perm[n_dev:]), np.sort(perm[:n_dev])


@lru_cache(maxsize=8)
def multi30k_by_image(lang: str) -> dict[str, str]:
    """Flickr8k file name -> its Multi30K ``train`` caption in ``lang`` (en, de, fr, cs), for the photos that have one."""
    folder = shared_path("captions", "multi30k")
    if folder is None or not (folder / f"train.{lang}.gz").is_file():
        return {}
    names = (folder / "train.txt").read_text(encoding="utf-8").split()
    with gzip.open(folder / f"train.{lang}.gz", "rt", encoding="utf-8") as fh:
        lines = [line.strip() for line in fh]
    by_id = {name.split(".")[0]: caption for name, caption in zip(names, lines)}
    out = {}
    for image in flickr8k().images:
        caption = by_id.get(image.split("_")[0])
        if caption:
            out[image] = caption
    return out


def multilingual_dev(images: list[str], langs: tuple[str, ...] = ("en", "de", "fr", "cs")
                     ) -> tuple[list[str], dict[str, list[str]]]:
    """The dev photos that have a Multi30K caption in every language of ``langs``, and those captions (aligned)."""
    tables = {lang: multi30k_by_image(lang) for lang in langs}
    keep = [im for im in images if all(im in t for t in tables.values())]
    return keep, {lang: [tables[lang][im] for im in keep] for lang in langs}
