"""The trainable part of a compact CLIP: projection heads over locked tower outputs, and their losses.

Zhai et al. (2022), "LiT: Zero-Shot Transfer with Locked-image text Tuning", section 3: a
pretrained image model is kept locked and a text model is trained to match it. In a compact CLIP
(models/compact_clip.py) *both* towers are locked and only two small heads learn, with CLIP's
symmetric InfoNCE and a learned temperature (Radford et al. 2021, section 2.3, Figure 3).
:class:`ClipHeads` is what services/clip/training.py trains and a checkpoint stores;
:func:`clip_loss` / :func:`multi_positive_loss` are the objectives; :func:`project` runs a head over
numpy rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from services.errors import InvalidInput

HEAD_KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class HeadConfig:
    """Both heads' shape: ``linear`` (one matrix + bias) or ``mlp`` (linear + a residual 2-layer MLP)."""

    kind: str = "mlp"
    image_dim: int = 1024
    text_dim: int = 512
    embed_dim: int = 256
    hidden_dim: int = 1024
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise InvalidInput(f"head must be one of {list(HEAD_KINDS)}", detail={"field": "head", "known": list(HEAD_KINDS)})
        if min(self.image_dim, self.text_dim, self.embed_dim, self.hidden_dim) < 1 or not 0 <= self.dropout < 1:
            raise InvalidInput("head dimensions must be positive and dropout in [0, 1)", detail={"field": "head"})


class Head(nn.Module):
    """x -> W x + b, plus (``mlp``) a residual branch Linear-GELU-Dropout-Linear, zero-initialised so
    training starts from the linear head and the MLP only adds what helps."""

    def __init__(self, in_dim: int, out_dim: int, kind: str, hidden_dim: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = None
        if kind == "mlp":
            self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if self.mlp is None else y + self.mlp(x)


class ClipHeads(nn.Module):
    """The trainable part: an image head, a text head, and the log inverse temperature (CLIP init 1/0.07)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.image = Head(config.image_dim, config.embed_dim, config.kind, config.hidden_dim, config.dropout)
        self.text = Head(config.text_dim, config.embed_dim, config.kind, config.hidden_dim, config.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image(x), dim=-1)

    def embed_texts(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text(x), dim=-1)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, text) unit rows (CLIP, Figure 3); the scale is
    clamped at 100 as in CLIP (section 2.5)."""
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * img @ txt.T
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, logit_scale: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with every caption of each photo in the batch: text->image is CLIP's cross entropy (each caption
    against the batch's photos); image->text spreads the target uniformly over the photo's own captions.
    ``weights`` (one per caption, positive) make both a weighted mean instead: the text->image terms are
    averaged with them and each photo's image->text target is proportional to them."""
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * txt @ img.T  # (captions, photos)
    log_p = torch.log_softmax(logits.T, dim=1)  # (photos, captions)
    positives = (owner[None, :] == torch.arange(len(img), device=img.device)[:, None]).float()
    if weights is None:
        t2i = nn.functional.cross_entropy(logits, owner)
    else:
        t2i = (nn.functional.cross_entropy(logits, owner, reduction="none") * weights).sum() / weights.sum()
        positives = positives * weights[None, :]
    i2t = -((log_p * positives).sum(1) / positives.sum(1)).mean()
    return 0.5 * (t2i + i2t)


def project(head_fn, x: np.ndarray, device: torch.device | str | None = None, batch_size: int = 8192) -> np.ndarray:
    """Unit rows of ``head_fn`` over numpy features, chunked, without gradients (inputs on ``device``, the heads';
    None: the CPU). The compact CLIP's and Globetrotter's heads both project through it."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = torch.as_tensor(np.asarray(x[start:start + batch_size], dtype=np.float32), device=device)
            out.append(head_fn(chunk).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
