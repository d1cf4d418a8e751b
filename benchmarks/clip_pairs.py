"""Multi30K translation pairs for the compact-CLIP benchmark (benchmarks/clip_train.py), as tower rows for
services/clip/training.train_heads' ``parallel``.

* :func:`photo_pairs`: each German/French/Czech Multi30K caption of a *training* photo with its English source
  caption (owner: the photo's row in the training set) -- what ``map_target="translation"`` fits the maps on.
* :func:`text_only_lines` / :func:`text_only_pairs`: every Multi30K ``train`` line whose photo is *not* one of
  ours (matched by Flickr id: Multi30K ``<id>.jpg`` vs Flickr8k ``<id>_<secret>.jpg``), English source -> its
  translation, owner -1 (no photo) -- text-only parallel data, used only with ``map_pairs="photos+text"``. Every
  line of any of our photos (training, validation or dev) is left out, so no validation or dev photo's caption is
  among them. Their tower rows go through the same on-disk cache as every other caption.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def photo_pairs(text_tower: Any, train_images: Sequence[str], langs: Iterable[str], cache_dir) -> dict[str, Any]:
    """Translation pairs (English source -> lang) of the training photos ``train_images`` (file names)."""
    from benchmarks.flickr import multi30k_by_image
    from services.clip.features import text_features

    src_table = multi30k_by_image("en")
    src, tgt, owner, tgt_lang = [], [], [], []
    for lang in langs:
        table = multi30k_by_image(lang)
        hits = [(i, name) for i, name in enumerate(train_images) if name in table and name in src_table]
        src += [src_table[name] for _, name in hits]
        tgt += [table[name] for _, name in hits]
        owner += [i for i, _ in hits]
        tgt_lang += [lang] * len(hits)
    return {"src": text_features(text_tower, src, cache_dir=cache_dir)[0],
            "tgt": text_features(text_tower, tgt, cache_dir=cache_dir)[0], "owner": np.asarray(owner, dtype=np.int64),
            "src_lang": ["en"] * len(src), "tgt_lang": tgt_lang}


def _flickr_id(name: str) -> str:
    return Path(name).name.split(".")[0].split("_")[0]


def text_only_lines(folder: str | Path, our_photos: Iterable[str], langs: Iterable[str], source: str = "en",
                    split: str = "train") -> tuple[list[str], dict[str, np.ndarray], dict[str, list[str]]]:
    """(source lines, per language the positions in them that have a translation, per language those translations)
    of the Multi30K ``split`` lines whose photo is not one of ``our_photos`` (any file names: the Flickr id is the
    part before ``_`` or ``.``). Blank lines are skipped."""
    folder = Path(folder)
    ours = {_flickr_id(n) for n in our_photos}
    names = (folder / f"{split}.txt").read_text(encoding="utf-8").split()

    def read(lang: str) -> list[str]:
        with gzip.open(folder / f"{split}.{lang}.gz", "rt", encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
        if len(lines) != len(names):
            raise ValueError(f"{split}.{lang}.gz has {len(lines)} lines for {len(names)} images")
        return lines

    src_all = read(source)
    keep = [j for j, name in enumerate(names) if _flickr_id(name) not in ours and src_all[j]]
    src = [src_all[j] for j in keep]
    positions, translations = {}, {}
    for lang in langs:
        tgt_all = read(lang)
        pos = [k for k, j in enumerate(keep) if tgt_all[j]]
        positions[lang] = np.asarray(pos, dtype=np.int64)
        translations[lang] = [tgt_all[keep[k]] for k in pos]
    return src, positions, translations


def text_only_pairs(text_tower: Any, folder: str | Path, our_photos: Iterable[str], langs: Iterable[str],
                    cache_dir) -> dict[str, Any]:
    """Tower rows of :func:`text_only_lines` as ``parallel`` pairs (owner -1: no photo); the English lines are
    encoded once (one cache entry), each language's translations once."""
    from services.clip.features import text_features

    langs = list(langs)
    src, positions, translations = text_only_lines(folder, our_photos, langs)
    src_rows = text_features(text_tower, src, cache_dir=cache_dir)[0]
    parts = [(src_rows[positions[lang]], text_features(text_tower, translations[lang], cache_dir=cache_dir)[0], lang)
             for lang in langs if len(positions[lang])]
    if not parts:
        return {"src": np.zeros((0, src_rows.shape[1] if src_rows.ndim == 2 else 0), np.float32),
                "tgt": np.zeros((0, 0), np.float32), "owner": np.zeros(0, np.int64), "src_lang": [], "tgt_lang": []}
    tgt_lang = [lang for _, t, lang in parts for _ in range(len(t))]
    return {"src": np.concatenate([s for s, _, _ in parts]), "tgt": np.concatenate([t for _, t, _ in parts]),
            "owner": np.full(len(tgt_lang), -1, dtype=np.int64), "src_lang": ["en"] * len(tgt_lang),
            "tgt_lang": tgt_lang}


def join_pairs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two ``parallel`` pair sets as one (``a``'s rows first)."""
    if not len(b["owner"]):
        return a
    return {"src": np.concatenate([a["src"], b["src"]]), "tgt": np.concatenate([a["tgt"], b["tgt"]]),
            "owner": np.concatenate([np.asarray(a["owner"], dtype=np.int64), np.asarray(b["owner"], dtype=np.int64)]),
            "src_lang": list(a["src_lang"]) + list(b["src_lang"]),
            "tgt_lang": list(a["tgt_lang"]) + list(b["tgt_lang"])}
