"""Tiny deterministic stand-ins for the frozen encoders (tests, benchmarks, weight-less demos).

- :func:`tiny_random_clip`: a real open_clip CLIP with a tiny architecture and random
  weights (seeded), wrapped as :class:`models.clip.ClipEncoder` -- the mechanics of the real
  thing (tokenizer, preprocessing, both towers), numbers meaningless.
- :class:`HashingTextEncoder`: a multilingual-encoder stand-in; a text is the normalised sum
  of seeded random vectors of its lower-cased tokens (so equal words give equal vectors).
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np


class HashingTextEncoder:
    """Deterministic bag-of-tokens encoder with the TextEncoder interface (name, dim, languages, encode)."""

    _TOKEN = re.compile(r"\w+", re.UNICODE)

    def __init__(self, dim: int = 64, languages: Sequence[str] = ("en", "fr", "de", "es"), name: str | None = None):
        self.dim = dim
        self.languages = tuple(languages)
        self.name = name or f"hashing-{dim}"
        self.calls = 0  # how many encode() calls (tests check caching with it)

    def _token_vector(self, token: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = self._TOKEN.findall(text.lower()) or [""]
            out[i] = np.sum([self._token_vector(t) for t in tokens], axis=0)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32, context_length: int = 16) -> dict:
    """An open_clip model config small enough for unit tests (~1.6M parameters, mostly the token table)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": image_size},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def tiny_random_clip(seed: int = 0, *, model: str = "ViT-B-32", tiny: bool = True, device: str = "cpu"):
    """A CLIP with random weights: ``tiny`` (for tests) or the real ``model`` architecture (benchmarks)."""
    import models.torchvision_compat  # noqa: F401  (must precede open_clip)
    import open_clip
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from open_clip.transform import image_transform

    from models.clip import ClipEncoder, ClipSpec

    torch.manual_seed(seed)
    if tiny:
        cfg = tiny_clip_config()
        net = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
                   text_cfg=CLIPTextCfg(**cfg["text_cfg"]))
        ctx, size, label = cfg["text_cfg"]["context_length"], cfg["vision_cfg"]["image_size"], f"tiny-random-clip-{seed}"
    else:
        net = open_clip.create_model(model, pretrained=None, device=device)
        ctx, size, label = net.context_length, net.visual.image_size[0], f"{model}-random-{seed}"
    net.eval().to(device)

    def tokenizer(texts):
        return open_clip.tokenize(list(texts), context_length=ctx)

    spec = ClipSpec(model=model if not tiny else "tiny", name=label, device=device)
    return ClipEncoder(spec, net, tokenizer, image_transform(size, is_train=False), device, "fp32", label)
