"""Tiny per-language compact CLIPs on disjoint photos, for tests and examples (WALIP with images as the only bridge).

:func:`tiny_language_clips` writes the coloured photos of services/clip/testing.py, deals them into an
English training set, a French one (disjoint from it) and held-out fingerprint photos, trains one compact
CLIP per language (pixels tower + that language's own static word vectors: random, so the two text towers
share nothing), and writes small *alignment* vectors per language in which the French colour words are the
English ones rotated (``planted rotation``), so WALIP step 2 has something to recover. Seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.clip.testing import COLOURS, make_captioned_set

EN_FILLER = ["a", "photo", "of", "something"]
FR_FILLER = ["une", "photo", "de", "image"]


@dataclass
class TinyLanguageClips:
    root: Path
    images: Path  # every photo
    fingerprint_images: Path  # the held-out ones (no CLIP trained on them)
    checkpoints: dict[str, Path]
    partition: object  # services.vision.language_clips.PhotoPartition
    words: dict[str, list[str]]  # alignment vocabularies (colour words first)
    vectors: dict[str, Path]  # alignment vectors (.npy + .vocab.txt)
    gold: np.ndarray  # (12, 2) colour translations as (en row, fr row)


def _write_vectors(path: Path, words: list[str], vectors: np.ndarray) -> Path:
    np.save(path, vectors.astype(np.float32))
    path.with_suffix(".vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def tiny_language_clips(root: str | Path, *, seed: int = 0, n_images: int = 144, n_fingerprint: int = 36,
                        epochs: int = 40) -> TinyLanguageClips:
    from services.clip.data import load_captioned_set
    from services.vision.language_clips import partition_photos, train_language_clips

    root = Path(root)
    paths = make_captioned_set(root / "data", n_images=n_images, seed=seed)
    lines = [line.split("\t") for line in paths["captions"].read_text(encoding="utf-8").splitlines() if line]
    fr_words = {fr for _, fr in COLOURS.values()} | set(FR_FILLER)
    is_fr = [cap.startswith("une ") for _, cap in lines]
    data = {"en": load_captioned_set(paths["images"], [(im, c) for (im, c), f in zip(lines, is_fr) if not f]),
            "fr": load_captioned_set(paths["images"], [(im, c) for (im, c), f in zip(lines, is_fr) if f])}
    rng = np.random.default_rng(seed)
    # each language's text tower: its own random word vectors (no word shares a vector across languages)
    towers = {}
    for lang, words in (("en", sorted(set(COLOURS) | set(EN_FILLER))), ("fr", sorted(fr_words))):
        towers[lang] = _write_vectors(root / f"tower.{lang}.npy", words, rng.normal(size=(len(words), 32)))
    names = data["en"].images
    partition = partition_photos(names, {"en": names, "fr": data["fr"].images}, n_fingerprint=n_fingerprint, seed=seed)
    fp_dir = root / "fingerprint-images"
    fp_dir.mkdir(parents=True, exist_ok=True)
    for n in partition.fingerprint:
        (fp_dir / n).write_bytes((paths["images"] / n).read_bytes())
    config = {"head": "linear", "epochs": epochs, "batch_size": 32, "val_fraction": 0.2, "seed": seed, "lr": 1e-2,
              "patience": epochs, "embed_dim": 32}
    clips = train_language_clips(partition, data, towers, root / "clips", image_tower="pixels-8",
                                 cache_dir=root / "cache", config=config)
    # alignment vectors: French = English rotated (+ a little noise), colour words first
    en_words = list(COLOURS) + [f"en{i}" for i in range(28)]
    fr_words_list = [COLOURS[c][1] for c in COLOURS] + [f"fr{i}" for i in range(28)]
    X = rng.normal(size=(len(en_words), 8))
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    Y = X @ Q + 0.01 * rng.normal(size=X.shape)
    vectors = {"en": _write_vectors(root / "align.en.npy", en_words, X),
               "fr": _write_vectors(root / "align.fr.npy", fr_words_list, Y)}
    gold = np.stack([np.arange(len(COLOURS)), np.arange(len(COLOURS))], axis=1).astype(np.int64)
    return TinyLanguageClips(root, paths["images"], fp_dir, {k: v.checkpoint for k, v in clips.items()}, partition,
                             {"en": en_words, "fr": fr_words_list}, vectors, gold)
