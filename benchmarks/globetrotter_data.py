"""Data of the Globetrotter benchmark: Flickr8k photos split into disjoint per-language parts, dev and test sets.

- Training: the shared Flickr8k photos, each assigned to ONE language (seeded): English photos keep their five
  Flickr8k captions, German, French and Czech photos get their Multi30K ``train`` caption in that language
  (matched by flickr id, benchmarks/flickr.py). Photos whose Flickr id is in Multi30K ``test_2016_flickr``
  are left out (the test captions describe them). No photo is captioned in two languages.
- Dev (model selection only): 1,000 Multi30K ``train`` lines, parallel in en/de/fr/cs, of photos that are
  not among the Flickr8k photos -- carved from training data, never test files, never a training caption.
- Test: Multi30K ``test_2016_flickr.{en,de,fr,cs}.gz`` (1,000) and XTD10 (en, es, it, ru, de, fr; 1,000).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmarks.common import SHARED_DATA
from benchmarks.flickr import flickr8k, multi30k_by_image

SEED = 16
DEV_LINES = 1000
MULTI30K_TEST = ("en", "de", "fr", "cs")
XTD10 = ("en", "de", "fr", "es", "it", "ru")


def _gz_lines(path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.strip() for line in fh]


def test_sets() -> dict[str, dict[str, list[str]]]:
    m30k = SHARED_DATA / "captions" / "multi30k"
    xtd = SHARED_DATA / "captions" / "xtd10"
    return {"multi30k": {lang: _gz_lines(m30k / f"test_2016_flickr.{lang}.gz") for lang in MULTI30K_TEST},
            "xtd10": {lang: (xtd / f"test_1kcaptions_{lang}.txt").read_text(encoding="utf-8").splitlines()
                      for lang in XTD10}}


@lru_cache(maxsize=1)
def dev_set() -> dict[str, list[str]]:
    """1,000 parallel Multi30K train lines whose photos are not among the Flickr8k photos."""
    m30k = SHARED_DATA / "captions" / "multi30k"
    names = (m30k / "train.txt").read_text(encoding="utf-8").split()
    ours = {im.split("_")[0] for im in flickr8k().images}
    lines = {lang: _gz_lines(m30k / f"train.{lang}.gz") for lang in MULTI30K_TEST}
    candidates = [i for i, name in enumerate(names) if name.split(".")[0] not in ours
                  and all(lines[lang][i] for lang in MULTI30K_TEST)]
    pick = np.sort(np.random.default_rng(SEED).choice(candidates, DEV_LINES, replace=False))
    return {lang: [lines[lang][i] for i in pick] for lang in MULTI30K_TEST}


@dataclass
class Assignment:
    images: list[str]  # all Flickr8k photos (row order of the image features)
    langs: list[str]
    captions: list[str]
    owner: np.ndarray  # caption -> photo row
    lang_of: np.ndarray  # caption -> index into langs

    def summary(self) -> dict[str, dict[str, int]]:
        return {lang: {"images": int(len(np.unique(self.owner[self.lang_of == li]))),
                       "captions": int((self.lang_of == li).sum())} for li, lang in enumerate(self.langs)}


def assignment(langs: tuple[str, ...], seed: int = SEED) -> Assignment:
    """Each eligible photo in exactly one of ``langs`` (English also takes the photos without Multi30K captions)."""
    data = flickr8k()
    test_ids = {n.split(".")[0] for n in (SHARED_DATA / "captions" / "multi30k" / "test_2016_flickr.txt")
                .read_text(encoding="utf-8").split()}
    m30k = {lang: multi30k_by_image(lang) for lang in langs if lang != "en"}
    eligible = np.array([i for i, im in enumerate(data.images)
                         if im.split("_")[0] not in test_ids and all(im in t for t in m30k.values())])
    allowed = np.array([im.split("_")[0] not in test_ids for im in data.images])
    part = np.full(len(data.images), -1, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(eligible)
    for li, chunk in enumerate(np.array_split(perm, len(langs))):
        part[chunk] = li
    if "en" in langs:  # photos lacking a Multi30K caption can still be English photos
        part[(part < 0) & allowed] = langs.index("en")
    captions, owner, lang_of = [], [], []
    en_li = langs.index("en") if "en" in langs else -1
    own = np.flatnonzero(part[data.owner] == en_li) if en_li >= 0 else np.array([], dtype=np.int64)
    captions += [data.captions[j] for j in own]
    owner += data.owner[own].tolist()
    lang_of += [en_li] * len(own)
    for li, lang in enumerate(langs):
        if lang == "en":
            continue
        photos = np.flatnonzero(part == li)
        captions += [m30k[lang][data.images[i]] for i in photos]
        owner += photos.tolist()
        lang_of += [li] * len(photos)
    return Assignment(list(data.images), list(langs), captions, np.asarray(owner, dtype=np.int64),
                      np.asarray(lang_of, dtype=np.int64))
