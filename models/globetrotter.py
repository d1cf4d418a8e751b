"""Globetrotter (Surís, Epstein & Vondrick, CVPR 2022): sentence embeddings for many languages aligned
through images alone -- heads, losses and the checkpoint format (training lives in services/sentences).

Every photo has a caption in *one* language; no caption is ever paired with its translation. Here both
towers are locked (a MobileNet image tower, per-language static word-vector towers or one multilingual
encoder; models/image_towers.py, models/text_towers.py) and small heads learn the shared space:

- image-text contrastive term (paper section 3.1): symmetric InfoNCE between a photo's image embedding
  and its caption's text embedding; its cosine estimates αˣ_ii, "the similarity of image i with its own
  caption";
- image-image contrastive term (section 3.1): InfoNCE between two views of each photo in a separate
  image-image head; its cosine estimates αᵛ_ij, "the similarity of images i and j". With locked towers the
  views are feature-space augmentations of the cached tower output (dropout + Gaussian noise), the
  counterpart of the paper's pixel augmentations;
- transitive similarity (section 3.2): α_ij = f((αˣ_ii · αᵛ_ij · αˣ_jj)^{1/3}), f(x) = max(0, x − m)/(1 − m),
  m = 0.4 -- caption i ↔ its photo ↔ a similar photo ↔ caption j, in any two languages;
- text heads: linear per language over static word-vector towers (the paper's setting: no tower knows a
  second language); over a multilingual encoder, residual z = x + s · r(x), r(x) = W x + b (W, b start at 0:
  training starts from the encoder's own space), r shared by all languages, optionally with a residual per
  language on top (``shared_residual = False``: per-language residuals only, a language without one of its own
  passes through unchanged). ``residual_scale`` s in [0, 1] weighs the learnt correction: s = 0 is exactly the
  encoder's own space (for every language), s = 1 the trained heads as trained;
- text loss (section 3.3): L_t = −Σ_i Σ_{j≠i} α_ij log softmax_j(β_ij / τ), β_ij = cos(z_i, z_j) of the text
  embeddings being learnt; α is a target (no gradient flows into it). The paper's cloze loss trains a text
  model from scratch; with locked towers it has nothing to train and is left out.

Checkpoint: a ``torch.save`` dict (read with ``weights_only=True``) with ``format = "vislex-globetrotter"``,
the towers (per language, or ``"*"`` for one multilingual tower), static towers' IDF tables, the heads'
config and state, and provenance; :func:`model_version` names a checkpoint by its content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from models.clip_heads import Head, clip_loss, project  # noqa: F401  (project: re-exported for its callers)
from services.errors import InvalidInput, Unavailable

FORMAT = "vislex-globetrotter"
VERSION = 1
MARGIN = 0.4
ANY_LANGUAGE = "*"
HEAD_KINDS = ("linear", "mlp", "residual")


# ---------------------------------------------------------------- losses (pure functions)


def margin_clip(x: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """f(x) = max(0, x − m) / (1 − m) (section 3.2): similarities under the margin count as unrelated."""
    return torch.clamp(x - margin, min=0.0) / (1.0 - margin)


def transitive_alpha(own: torch.Tensor, visual: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """α_ij = f((αˣ_ii · αᵛ_ij · αˣ_jj)^{1/3}) for a batch (section 3.2).

    ``own`` (B,): αˣ_ii, each photo's similarity with its own caption; ``visual`` (B, B): αᵛ_ij. The cube
    root is the real one (a negative product gives a negative root, which f maps to 0).
    """
    product = own[:, None] * visual * own[None, :]
    root = torch.sign(product) * torch.abs(product).pow(1.0 / 3.0)
    return margin_clip(root, margin)


def text_loss(text: torch.Tensor, alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """L_t = −Σ_i Σ_{j≠i} α_ij log softmax_{j≠i}(β_ij / τ), averaged over the batch's i (section 3.3).

    ``text`` (B, d) unit rows z_i; ``alpha`` (B, B) targets (used as given: detach before calling).
    """
    n = text.shape[0]
    beta = text @ text.T / tau
    eye = torch.eye(n, dtype=torch.bool, device=text.device)
    log_p = torch.log_softmax(beta.masked_fill(eye, float("-inf")), dim=1)
    weights = alpha.masked_fill(eye, 0.0)
    return -(weights * log_p.masked_fill(eye, 0.0)).sum() / n


def image_text_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between photos and their captions (CLIP's loss; models.compact_clip.clip_loss)."""
    return clip_loss(image, text, logit_scale)


def feature_views(x: torch.Tensor, drop: float, noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of locked-tower features: feature dropout (rescaled) plus Gaussian noise."""
    # drawn on the generator's device (the CPU), then moved: the same draws wherever the heads train
    keep = (torch.rand(x.shape, generator=generator) >= drop).to(x.device, x.dtype) / max(1e-6, 1.0 - drop)
    return x * keep + noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * x.std()


# ---------------------------------------------------------------- heads


@dataclass(frozen=True)
class GlobetrotterConfig:
    """Shapes of the heads. ``text_dims`` maps a tower key (a language, or "*" for one multilingual
    tower shared by all) to its output width; ``text_head`` ``residual`` is z = x + W x with W starting
    at 0 (needs the tower width = ``embed_dim``): training starts from the tower's own space."""

    image_dim: int
    text_dims: dict[str, int]
    embed_dim: int = 256
    text_head: str = "linear"
    image_head: str = "linear"
    hidden_dim: int = 1024
    dropout: float = 0.1
    tau: float = 0.1
    residual_scale: float = 1.0
    shared_residual: bool = True

    def __post_init__(self) -> None:
        if self.text_head not in HEAD_KINDS or self.image_head not in HEAD_KINDS[:2]:
            raise InvalidInput(f"heads must be one of {list(HEAD_KINDS)} (image: linear or mlp)",
                               detail={"field": "text_head", "known": list(HEAD_KINDS)})
        if not self.text_dims:
            raise InvalidInput("a Globetrotter model needs at least one text tower", detail={"field": "text_towers"})
        if self.text_head == "residual" and any(d != self.embed_dim for d in self.text_dims.values()):
            raise InvalidInput("residual text heads need embed_dim equal to the text tower width",
                               detail={"field": "embed_dim", "text_dims": dict(self.text_dims)})
        if not 0.0 <= self.residual_scale <= 1.0:
            raise InvalidInput("residual_scale must be in [0, 1]", detail={"field": "residual_scale"})
        if min(self.image_dim, self.embed_dim, self.hidden_dim, *self.text_dims.values()) < 1 or not self.tau > 0:
            raise InvalidInput("dimensions must be positive and tau > 0", detail={"field": "config"})


class ResidualHead(nn.Module):
    """x -> x + W x + b, W and b zero-initialised (the tower's own space at the start)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


def _head(in_dim: int, cfg: GlobetrotterConfig, kind: str) -> nn.Module:
    if kind == "residual":
        return ResidualHead(in_dim)
    return Head(in_dim, cfg.embed_dim, kind, cfg.hidden_dim, cfg.dropout)


class GlobetrotterHeads(nn.Module):
    """Image head (image-text space), image-image head (αᵛ), one text head per tower key, two temperatures."""

    def __init__(self, config: GlobetrotterConfig):
        super().__init__()
        self.config = config
        self.image = _head(config.image_dim, config, config.image_head)
        self.visual = _head(config.image_dim, config, config.image_head)
        self.text = nn.ModuleDict({_module_key(k): _head(d, config, config.text_head)
                                   for k, d in sorted(config.text_dims.items())})
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.visual_logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    @property
    def tower_keys(self) -> list[str]:
        return sorted(self.config.text_dims)

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image(x), dim=-1)

    def embed_visual(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.visual(x), dim=-1)

    def embed_texts(self, x: torch.Tensor, key: str) -> torch.Tensor:
        if self.config.text_head != "residual":
            return nn.functional.normalize(self.text[_module_key(key)](x), dim=-1)
        return nn.functional.normalize(x + self.config.residual_scale * self.residual(x, key), dim=-1)

    def residual(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """r(x) of a residual text head: the language's own correction (if it has one) plus the shared one
        (when ``shared_residual``); zero for a language with neither -- it passes through unchanged."""
        shared = self.config.shared_residual or not self.stacked  # a lone "*" head is the shared residual
        r = self.text["any"].linear(x) if shared and ANY_LANGUAGE in self.config.text_dims else torch.zeros_like(x)
        return r if key == ANY_LANGUAGE else r + self.text[_module_key(key)].linear(x)

    @property
    def stacked(self) -> bool:
        """Residual heads per language over one shared space, plus a shared residual ("*") that every language
        adds and languages without a head of their own use alone."""
        return self.config.text_head == "residual" and ANY_LANGUAGE in self.config.text_dims \
            and len(self.config.text_dims) > 1


def with_residual_scale(heads: GlobetrotterHeads, scale: float) -> GlobetrotterHeads:
    """The same trained heads with the residual weighed by ``scale`` (0: the tower's own space, 1: as trained)."""
    from dataclasses import replace

    out = GlobetrotterHeads(replace(heads.config, residual_scale=float(scale)))
    out.load_state_dict(heads.state_dict())
    return out.to(next(heads.parameters()).device).train(heads.training)


def _module_key(key: str) -> str:
    return "any" if key == ANY_LANGUAGE else f"l_{key}"  # ModuleDict keys must be identifiers without '*'


def tower_key(config: GlobetrotterConfig, lang: str) -> str | None:
    """The text tower/head serving ``lang``: its own, else the shared multilingual one, else None."""
    if lang in config.text_dims:
        return lang
    return ANY_LANGUAGE if ANY_LANGUAGE in config.text_dims else None


# ---------------------------------------------------------------- checkpoint


class CheckpointError(InvalidInput):
    code = "invalid_checkpoint"


@dataclass
class GlobetrotterCheckpoint:
    """What a checkpoint holds (heads built and loaded)."""

    heads: GlobetrotterHeads
    image_tower: str
    text_towers: dict[str, str]  # tower key -> tower name (models.text_towers.load_text_tower)
    text_states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    path: Path | None = None

    @property
    def languages(self) -> list[str]:
        return sorted(self.text_towers)


def save_checkpoint(path: str | os.PathLike, heads: GlobetrotterHeads, *, image_tower: str,
                    text_towers: dict[str, str], text_states: dict[str, dict[str, Any]] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename)."""
    if set(text_towers) != set(heads.config.text_dims):
        raise InvalidInput("text towers and text heads name different languages",
                           detail={"towers": sorted(text_towers), "heads": sorted(heads.config.text_dims)})
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "image_tower": image_tower, "text_towers": dict(text_towers),
            "config": asdict(heads.config),
            "state_dict": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
            "text_states": {lang: {k: torch.as_tensor(np.asarray(v)) for k, v in st.items()}
                            for lang, st in (text_states or {}).items() if st},
            "meta": meta or {}}
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, p)
    return p


def model_version(path: str | os.PathLike) -> str:
    """``g`` + the first 12 hex digits of the file's sha256: a checkpoint's version, stable across copies."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "g" + h.hexdigest()[:12]


def is_checkpoint_file(path: str | os.PathLike) -> bool:
    try:
        read_checkpoint(path)
        return True
    except (CheckpointError, Unavailable):
        return False


def read_checkpoint(path: str | os.PathLike) -> GlobetrotterCheckpoint:
    p = Path(path)
    if not p.is_file():
        raise Unavailable(f"Globetrotter checkpoint {p.name} does not exist", detail={"reason": "weights_missing"})
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is one clear error
        raise CheckpointError(f"{p.name} is not a readable checkpoint: {type(e).__name__}", detail={"path": p.name}) from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{p.name} is not a vislex Globetrotter checkpoint", detail={"path": p.name})
    if int(blob.get("version", 0)) > VERSION:
        raise CheckpointError(f"{p.name} has checkpoint version {blob.get('version')}; this vislex reads up to {VERSION}",
                              detail={"path": p.name})
    try:
        heads = GlobetrotterHeads(GlobetrotterConfig(**blob["config"]))
        heads.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{p.name}: heads do not match their config ({type(e).__name__})",
                              detail={"path": p.name}) from e
    states = {lang: {k: v.numpy() for k, v in st.items()} for lang, st in (blob.get("text_states") or {}).items()}
    return GlobetrotterCheckpoint(heads.eval(), blob["image_tower"], dict(blob["text_towers"]), states,
                                  dict(blob.get("meta") or {}), model_version(p), p)


def load_text_towers(ckpt: GlobetrotterCheckpoint, towers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's text towers (loaded by name unless given), IDF tables restored, widths checked."""
    from models.text_towers import load_text_tower

    out = {}
    for key, name in ckpt.text_towers.items():
        tower = (towers or {}).get(key) or load_text_tower(name, language=None if key == ANY_LANGUAGE else key)
        state = ckpt.text_states.get(key)
        if state and hasattr(tower, "load_state"):
            tower.load_state(state)
        if int(tower.dim) != ckpt.heads.config.text_dims[key]:
            raise CheckpointError(f"text tower {name} gives {tower.dim}-d rows; the {key} head takes "
                                  f"{ckpt.heads.config.text_dims[key]}-d", detail={"reason": "mismatched_towers"})
        out[key] = tower
    return out


def encode_sentences(heads: GlobetrotterHeads, towers: dict[str, Any], texts: Sequence[str], lang: str) -> np.ndarray:
    """Sentences of ``lang`` -> unit rows of the learnt space (tower, then the language's text head)."""
    key = tower_key(heads.config, lang)
    if key is None:
        raise InvalidInput(f"this Globetrotter model has no text tower for {lang!r}",
                           detail={"field": "lang", "supported": sorted(heads.config.text_dims)})
    feats = towers[key].encode_text(list(texts))
    if not len(feats):
        return np.zeros((0, heads.config.embed_dim), dtype=np.float32)
    return project(lambda x: heads.embed_texts(x, key), feats)
