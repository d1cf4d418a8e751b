"""Planted multilingual photo captions: a latent scene u; photo = A u + noise; a caption in language L = R_L u
+ noise, each language's tower its own random map (no tower knows another language); photos disjoint per
language. Parallel test sentences share a latent u across languages."""

from __future__ import annotations

import numpy as np


def planted(seed: int = 0, langs=("en", "de"), photos_per_lang: int = 300, n_test: int = 100, latent: int = 12,
            image_dim: int = 32, text_dim: int = 20, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((latent, image_dim))
    R = {lang: rng.standard_normal((latent, text_dim)) for lang in langs}

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    n_img = photos_per_lang * len(langs)
    U = rng.standard_normal((n_img, latent))
    img = unit(U @ A + noise * rng.standard_normal((n_img, image_dim)) * np.sqrt(latent))
    owner = np.arange(n_img)
    lang_of = np.repeat(np.arange(len(langs)), photos_per_lang)
    rows = np.tile(np.arange(photos_per_lang), len(langs))
    feats = {lang: unit(U[lang_of == li] @ R[lang] + noise * rng.standard_normal((photos_per_lang, text_dim))
                        * np.sqrt(latent)) for li, lang in enumerate(langs)}
    Ut = rng.standard_normal((n_test, latent))
    test = {lang: unit(Ut @ R[lang] + noise * rng.standard_normal((n_test, text_dim)) * np.sqrt(latent)) for lang in langs}
    Ud = rng.standard_normal((n_test, latent))
    dev = {lang: unit(Ud @ R[lang] + noise * rng.standard_normal((n_test, text_dim)) * np.sqrt(latent)) for lang in langs}
    return img, feats, owner, lang_of, rows, list(langs), test, dev
