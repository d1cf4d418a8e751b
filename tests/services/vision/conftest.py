"""Fixtures for the vision tests: a synthetic CLIP with planted word-image structure.

Images are tiny PNGs whose first pixel encodes their index; the planted encoder maps
that index to a fixed image vector, so the real image-folder code path is exercised.
Source and target "CLIPs" live in different spaces (target = source rotated by Q), as
two languages' CLIP models would; fingerprints are invariant to that rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.clip import LanguageEncoders

EMBED = 48
N_IMAGES = 90
N_VISUAL = 80  # word pairs that share image patterns
N_ABSTRACT = 80  # words with no visual content (should fail the visual filter)
TEMPLATES = {"en": ["a photo of a {}.", "a picture of a {}."], "fr": ["une photo d'un {}.", "une image d'un {}."]}


def _unit(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


@dataclass
class PlantedClip:
    """A CLIP stand-in: text and image vectors planted in one space (optionally rotated)."""

    identity: str
    word_vectors: dict[str, np.ndarray]
    image_vectors: np.ndarray
    templates: list[str]
    calls: list[int] = field(default_factory=list)

    def encode_text(self, texts, batch_size=256):
        self.calls.append(len(texts))
        out = []
        for t in texts:
            for i, tpl in enumerate(self.templates):
                pre, post = tpl.split("{}")
                if t.startswith(pre) and t.endswith(post):
                    w = t[len(pre):len(t) - len(post)]
                    # each template shifts the embedding a little; the ensemble mean cancels it
                    shift = np.zeros(EMBED)
                    shift[i % EMBED] = 0.05 * (1 if i % 2 == 0 else -1)
                    out.append(self.word_vectors[w] + shift)
                    break
            else:
                raise KeyError(t)
        return _unit(np.array(out)).astype(np.float32)

    def encode_images(self, images, batch_size=64):
        idx = [im.getpixel((0, 0))[0] + 256 * im.getpixel((0, 0))[1] for im in images]
        return self.image_vectors[idx].astype(np.float32)


@dataclass
class Planted:
    images_dir: Path
    en_words: list[str]
    fr_words: list[str]
    gold: np.ndarray  # (p, 2) visual + abstract gold translations (en index, fr index)
    visual_gold: np.ndarray
    en: LanguageEncoders
    fr: LanguageEncoders


def write_index_images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.zeros((8, 8, 3), dtype=np.uint8)
        arr[..., 0], arr[..., 1] = i % 256, i // 256
        Image.fromarray(arr).save(folder / f"img_{i:04d}.png")


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> Planted:
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("images")
    write_index_images(folder, N_IMAGES)
    G = _unit(rng.normal(size=(N_IMAGES, EMBED)))
    concept = np.zeros((N_VISUAL, EMBED))
    for c in range(N_VISUAL):
        concept[c] = G[rng.choice(N_IMAGES, 3, replace=False)].sum(0)
    concept = _unit(concept)
    Q, _ = np.linalg.qr(rng.normal(size=(EMBED, EMBED)))

    n = N_VISUAL + N_ABSTRACT
    en_words = [f"en{c}" for c in range(n)]
    fr_perm = rng.permutation(n)  # fr word j is the translation of en word fr_perm[j]
    fr_words = [f"fr{fr_perm[j]}" for j in range(n)]
    fr_index = {w: j for j, w in enumerate(fr_words)}

    en_vec, fr_vec = {}, {}
    for c in range(n):
        if c < N_VISUAL:
            base_en = concept[c] + 0.15 * rng.normal(size=EMBED) / np.sqrt(EMBED)
            base_fr = concept[c] + 0.15 * rng.normal(size=EMBED) / np.sqrt(EMBED)
        else:  # abstract words: unrelated random directions, weakly tied to no image
            base_en, base_fr = rng.normal(size=EMBED), rng.normal(size=EMBED)
        en_vec[f"en{c}"] = _unit(base_en)
        fr_vec[f"fr{c}"] = _unit(base_fr) @ Q
    en_clip = PlantedClip("planted-en", en_vec, G, TEMPLATES["en"])
    fr_clip = PlantedClip("planted-fr", fr_vec, G @ Q, TEMPLATES["fr"])
    gold = np.array([[c, fr_index[f"fr{c}"]] for c in range(n)], dtype=np.int64)
    return Planted(folder, en_words, fr_words, gold, gold[:N_VISUAL],
                   LanguageEncoders("en", en_clip, en_clip, "planted-en"),
                   LanguageEncoders("fr", fr_clip, fr_clip, "planted-fr"))


@pytest.fixture(scope="session")
def planted_clip_cls():
    return PlantedClip


@pytest.fixture(scope="session")
def index_images():
    """Writes ``n`` tiny PNGs whose first pixel encodes their index."""
    return write_index_images


def planted_word_vectors(planted: Planted, d: int = 24, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static word vectors for the planted vocabularies: (X en, Y fr, R) with Y[fr j] = X[en gold(j)] R + noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(planted.en_words), d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    R, _ = np.linalg.qr(rng.normal(size=(d, d)))
    tgt_order = planted.gold[np.argsort(planted.gold[:, 1]), 0]  # en index behind each fr word
    Y = X[tgt_order] @ R + 0.01 * rng.normal(size=X.shape)
    return X, Y, R
