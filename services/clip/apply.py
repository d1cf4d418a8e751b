"""Embedding files with a CLIP: through the tower-output cache when the CLIP is a compact one.

A compact CLIP is locked towers + heads, so the expensive part (the towers) is cached on disk by
services/clip/features.py and only the cheap heads run again; any other CLIP (open_clip) encodes
directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from services.clip.features import image_features, text_features

Progress = Callable[[str, int, int, dict | None], None]


def embed_image_files(clip: Any, images_dir: str | os.PathLike, names: Sequence[str], *,
                      cache_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> np.ndarray:
    if getattr(clip, "image_tower", None) is not None and hasattr(clip, "image_features_to_clip"):
        feats, _ = image_features(clip.image_tower, images_dir, names, cache_dir=cache_dir, progress=progress)
        return clip.image_features_to_clip(feats)
    d = Path(images_dir)
    return clip.encode_images([d / n for n in names])


def embed_texts(clip: Any, texts: Sequence[str], *, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    if getattr(clip, "text_tower", None) is not None and hasattr(clip, "text_features_to_clip"):
        feats, _ = text_features(clip.text_tower, texts, cache_dir=cache_dir)
        return clip.text_features_to_clip(feats)
    return clip.encode_text(list(texts))


def prompt_ensemble(clip: Any, names: Sequence[str], templates: Sequence[str], *,
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Unit mean over templates of each name's prompt embeddings (CLIP, section 3.1.4)."""
    prompts = [t.replace("{c}", "{}").format(n) for t in templates for n in names]
    emb = embed_texts(clip, prompts, cache_dir=cache_dir).reshape(len(templates), len(names), -1).mean(axis=0)
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)
