"""A compact CLIP: two locked pretrained towers + trained projection heads (the LiT recipe).

Zhai et al. (2022), "LiT: Zero-Shot Transfer with Locked-image text Tuning", section 3: a
pretrained image model is kept locked and a text model is trained to match it. Here *both*
towers are locked (a MobileNet from TFLite, a sentence encoder or static word vectors) and only
two small heads learn, with CLIP's symmetric InfoNCE and a learned temperature (Radford et al.
2021, section 2.3, Figure 3). Training lives in services/clip/training.py; this module is the
model: heads, the checkpoint format, and :class:`CompactClip`, which has the methods of
models.clip.ClipEncoder (``encode_text``, ``encode_images``, ``embed_dim``, ``identity``...) so a
trained checkpoint is a CLIP everywhere vislex takes one.

Checkpoint: a ``torch.save`` dict (loaded with ``weights_only=True``: tensors and plain types
only) with ``format = "vislex-compact-clip"``, the tower names, the heads' state and config,
the static text tower's IDF table when it has one, and provenance (data, metrics, time).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from services.errors import InvalidInput, Unavailable

FORMAT = "vislex-compact-clip"
VERSION = 1
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


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, logit_scale: torch.Tensor
                        ) -> torch.Tensor:
    """InfoNCE with every caption of each photo in the batch: text->image is CLIP's cross entropy (each caption
    against the batch's photos); image->text spreads the target uniformly over the photo's own captions."""
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * txt @ img.T  # (captions, photos)
    t2i = nn.functional.cross_entropy(logits, owner)
    log_p = torch.log_softmax(logits.T, dim=1)  # (photos, captions)
    positives = (owner[None, :] == torch.arange(len(img), device=img.device)[:, None]).float()
    i2t = -((log_p * positives).sum(1) / positives.sum(1)).mean()
    return 0.5 * (t2i + i2t)


def project(head_fn, x: np.ndarray, device: str = "cpu", batch_size: int = 8192) -> np.ndarray:
    """Unit rows of ``head_fn`` over numpy features, in eval mode, chunked."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = torch.as_tensor(np.asarray(x[start:start + batch_size], dtype=np.float32), device=device)
            out.append(head_fn(chunk).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- checkpoint


class CheckpointError(InvalidInput):
    code = "invalid_checkpoint"


def save_checkpoint(path: str | os.PathLike, heads: ClipHeads, *, image_tower: str, text_tower: str,
                    text_state: dict[str, Any] | None = None, languages: Sequence[str] = ("*",),
                    meta: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a checkpoint."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT, "version": VERSION, "image_tower": image_tower, "text_tower": text_tower,
        "head": asdict(heads.config), "state_dict": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
        "text_state": {k: torch.as_tensor(np.asarray(v)) for k, v in (text_state or {}).items()},
        "languages": list(languages), "meta": meta or {},
    }
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, p)
    return p


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise Unavailable(f"compact CLIP checkpoint {p.name} does not exist", detail={"reason": "weights_missing"})
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is one clear error
        raise CheckpointError(f"{p.name} is not a readable checkpoint: {type(e).__name__}", detail={"path": p.name}) from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{p.name} is not a vislex compact CLIP checkpoint", detail={"path": p.name})
    if int(blob.get("version", 0)) > VERSION:
        raise CheckpointError(f"{p.name} has checkpoint version {blob.get('version')}; this vislex reads up to {VERSION}",
                              detail={"path": p.name})
    return blob


def checkpoint_languages(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The languages a compact checkpoint's text tower speaks (``("*",)`` = any); None for other files."""
    try:
        return tuple(read_checkpoint(path).get("languages") or ("*",))
    except (CheckpointError, Unavailable):
        return None


def is_compact_checkpoint(path: str | os.PathLike) -> bool:
    """True for a file saved by :func:`save_checkpoint` (cheap: torch zip archives name their members)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        read_checkpoint(p)
        return True
    except (CheckpointError, Unavailable):
        return False


class CompactClip:
    """A compact CLIP ready to encode: towers + heads. Duck-types models.clip.ClipEncoder."""

    precision = "fp32"

    def __init__(self, heads: ClipHeads, image_tower: Any, text_tower: Any, *, label: str, identity: str,
                 languages: Sequence[str], meta: dict[str, Any] | None = None, spec: Any = None):
        cfg = heads.config
        if image_tower is not None and image_tower.dim != cfg.image_dim:
            raise CheckpointError(f"image tower {image_tower.name} gives {image_tower.dim}-d rows; the heads take "
                                  f"{cfg.image_dim}-d", detail={"reason": "mismatched_towers"})
        if text_tower.dim != cfg.text_dim:
            raise CheckpointError(f"text tower {text_tower.name} gives {text_tower.dim}-d rows; the heads take "
                                  f"{cfg.text_dim}-d", detail={"reason": "mismatched_towers"})
        self.heads = heads.eval()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self._label = label
        self.identity = identity
        self.languages = tuple(languages)
        self.meta = meta or {}
        self.spec = spec
        self.device = "cpu"
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self._label

    @property
    def embed_dim(self) -> int:
        return int(self.heads.config.embed_dim)

    def describe(self) -> dict[str, Any]:
        return {"kind": "compact", "image_tower": getattr(self.image_tower, "name", None),
                "text_tower": getattr(self.text_tower, "name", None), "embed_dim": self.embed_dim,
                "head": self.heads.config.kind, "languages": list(self.languages), "identity": self.identity,
                "trained": {k: self.meta.get(k) for k in ("trained_at", "data", "val") if k in self.meta}}

    def text_features_to_clip(self, feats: np.ndarray) -> np.ndarray:
        with self._lock:
            return project(self.heads.embed_texts, feats)

    def image_features_to_clip(self, feats: np.ndarray) -> np.ndarray:
        with self._lock:
            return project(self.heads.embed_images, feats)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.text_features_to_clip(self.text_tower.encode_text(texts, batch_size=batch_size))

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self.image_tower is None:
            raise Unavailable(f"{self._label}: its image tower is not available", detail={"reason": "weights_missing"})
        return self.image_features_to_clip(self.image_tower.encode_images(images, batch_size=batch_size))


def heads_from_blob(blob: dict[str, Any]) -> ClipHeads:
    heads = ClipHeads(HeadConfig(**blob["head"]))
    try:
        heads.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint heads do not match their config: {e}") from e
    return heads.eval()


def load_compact_clip(path: str | os.PathLike, *, mobilenet_dir: str | os.PathLike | None = None,
                      text_tower: Any = None, image_tower: Any = None, spec: Any = None,
                      label: str | None = None) -> CompactClip:
    """Load a checkpoint with the towers it names (or the ones given); Unavailable when a tower is missing."""
    from models.image_towers import load_image_tower
    from models.text_towers import load_text_tower

    p = Path(path)
    blob = read_checkpoint(p)
    heads = heads_from_blob(blob)
    if text_tower is None:
        text_tower = load_text_tower(blob["text_tower"])
    state = blob.get("text_state") or {}
    if state and hasattr(text_tower, "load_state"):
        text_tower.load_state({k: v.numpy() for k, v in state.items()})
    if image_tower is None:
        image_tower = load_image_tower(blob["image_tower"], mobilenet_dir=mobilenet_dir)
    from models.image_towers import file_identity

    identity = f"compact:{file_identity(p)}"
    return CompactClip(heads, image_tower, text_tower, label=label or f"compact:{p.name}", identity=identity,
                       languages=blob.get("languages") or ("*",), meta=blob.get("meta") or {}, spec=spec)
