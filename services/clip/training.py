"""Training a compact CLIP: heads over cached tower outputs, symmetric InfoNCE, early stopping.

The recipe (LiT, Zhai et al. 2022, section 3, with both towers locked; CLIP's loss and learned
temperature, Radford et al. 2021, section 2.3): every epoch visits each training photo once, in
batches of ``batch_size`` photos, each with *one* of its captions drawn at random -- so a batch
never holds two captions of one photo (no false negatives) and all five captions of a Flickr
photo are seen over the epochs. AdamW, cosine learning rate, validation recall after every
epoch on a seeded image-level split carved from the training photos, and the best epoch's heads
are kept (early stopping with ``patience``). Deterministic for a seed on one device.

:func:`run_clip_training` is the whole run from files (the CLI and the HTTP job share it);
:func:`train_heads` is the pure part (arrays in, heads out).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.compact_clip import ClipHeads, HeadConfig, clip_loss, multi_positive_loss, project, save_checkpoint
from services.clip.data import load_captioned_set, split_images
from services.clip.evaluation import mean_recall, retrieval_recall
from services.clip.features import image_features, text_features
from services.errors import InvalidInput

Progress = Callable[[str, int, int, dict | None], None]


@dataclass(frozen=True)
class ClipTrainConfig:
    """Hyper-parameters; the defaults are the shipped default model's, chosen on a 1,000-photo validation
    split carved from the benchmark's *training* photos (never on its dev photos): linear heads and every
    caption of a photo in its batch (text->image R@1 18.4 vs 17.3 one caption per photo, USE+e5 tower;
    MLP heads 18.7 within noise at 5x the training time)."""

    head: str = "linear"
    embed_dim: int = 256
    hidden_dim: int = 1024
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 6
    captions: str = "all"  # per photo per batch: "one" drawn at random (CLIP) or "all" (multi-positive InfoNCE)
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ClipTrainConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown training options: {unknown}", detail={"known": sorted(known)})
        cfg = cls(**data)
        if cfg.captions not in ("one", "all"):
            raise InvalidInput("captions must be 'one' or 'all'", detail={"field": "captions"})
        if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.lr <= 0 or cfg.patience < 1 or cfg.embed_dim < 1:
            raise InvalidInput("epochs, patience and embed_dim must be >= 1, batch_size >= 2, lr > 0",
                               detail={"field": "config"})
        HeadConfig(kind=cfg.head, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)
        return cfg


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _caption_table(owner: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, start, count): captions of image i are order[start[i] : start[i] + count[i]]."""
    order = np.argsort(owner, kind="stable")
    count = np.bincount(owner, minlength=n_images)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return order, start, count


def train_heads(image_feats: np.ndarray, text_feats: np.ndarray, owner: np.ndarray, train_images: np.ndarray,
                val_images: np.ndarray, config: ClipTrainConfig, progress: Progress | None = None
                ) -> tuple[ClipHeads, list[dict[str, Any]], dict[str, Any]]:
    """Train heads; returns (best heads, per-epoch history, best validation metrics).

    ``owner[j]`` is caption j's image (row of ``image_feats``); photos in ``val_images`` and their
    captions are only used for validation recall.
    """
    owner = np.asarray(owner, dtype=np.int64)
    train_images = np.asarray(train_images, dtype=np.int64)
    if len(train_images) < 2:
        raise InvalidInput("training needs at least 2 captioned photos", detail={"images": int(len(train_images))})
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = _device(config.device)
    heads = ClipHeads(HeadConfig(kind=config.head, image_dim=image_feats.shape[1], text_dim=text_feats.shape[1],
                                 embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
                                 dropout=config.dropout)).to(device)
    X_img = torch.as_tensor(np.asarray(image_feats, dtype=np.float32), device=device)
    X_txt = torch.as_tensor(np.asarray(text_feats, dtype=np.float32), device=device)
    order, start, count = _caption_table(owner, len(image_feats))
    if np.any(count[train_images] == 0):
        raise InvalidInput("every training photo needs at least one caption")
    val = _val_set(owner, val_images, len(image_feats))
    batch = min(config.batch_size, len(train_images))
    steps_per_epoch = max(1, len(train_images) // batch)  # drop the ragged tail: equal-size contrastive batches
    total_steps = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    history: list[dict[str, Any]] = []
    best_state, best_score, best_metrics, stale = None, -1.0, {}, 0
    for epoch in range(1, config.epochs + 1):
        heads.train()
        perm = rng.permutation(train_images)
        # one random caption per photo this epoch, vectorised
        pick = order[start[perm] + np.floor(rng.random(len(perm)) * count[perm]).astype(np.int64)]
        t0, losses = time.perf_counter(), []
        for s in range(steps_per_epoch):
            idx_i = torch.as_tensor(perm[s * batch:(s + 1) * batch], device=device)
            if config.captions == "all":
                loss = _all_captions_loss(heads, X_img, X_txt, perm[s * batch:(s + 1) * batch], order, start, count,
                                          device)
            else:
                idx_t = torch.as_tensor(pick[s * batch:(s + 1) * batch], device=device)
                loss = clip_loss(heads.embed_images(X_img[idx_i]), heads.embed_texts(X_txt[idx_t]), heads.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        heads.eval()
        record: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                                  "temperature": round(float(1 / heads.logit_scale.detach().exp().clamp(max=100)), 5),
                                  "seconds": round(time.perf_counter() - t0, 3)}
        if val is not None:
            metrics = evaluate_heads(heads, image_feats, text_feats, *val, device=str(device))
            score = mean_recall(metrics)
            record.update(val=metrics, val_mean_recall=round(score, 3))
        else:
            score = -record["loss"]
        history.append(record)
        if score > best_score:
            best_score, best_state, best_metrics, stale = score, copy.deepcopy(heads.state_dict()), record, 0
        else:
            stale += 1
        if progress:
            progress("train", epoch, config.epochs, {"loss": record["loss"], **({"val_mean_recall": record.get(
                "val_mean_recall"), "val_t2i_r@10": record["val"]["t2i"]["r@10"]} if val is not None else {})})
        if stale >= config.patience:
            break
    heads.load_state_dict(best_state)
    heads = heads.cpu().eval()
    return heads, history, {"epoch": best_metrics.get("epoch"), **({"val": best_metrics["val"]} if val is not None else {})}


def _all_captions_loss(heads: ClipHeads, X_img: torch.Tensor, X_txt: torch.Tensor, photos: np.ndarray,
                       order: np.ndarray, start: np.ndarray, count: np.ndarray, device) -> torch.Tensor:
    """Multi-positive loss over ``photos`` and every one of their captions (gathered without a loop)."""
    n = count[photos]
    owner = np.repeat(np.arange(len(photos)), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    captions = order[np.repeat(start[photos], n) + offsets]
    return multi_positive_loss(heads.embed_images(X_img[torch.as_tensor(photos, device=device)]),
                               heads.embed_texts(X_txt[torch.as_tensor(captions, device=device)]),
                               torch.as_tensor(owner, device=device), heads.logit_scale)


def _val_set(owner: np.ndarray, val_images: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(val image rows, val caption rows, caption -> position in val image rows)."""
    val_images = np.asarray(val_images, dtype=np.int64)
    if len(val_images) == 0:
        return None
    pos = np.full(n_images, -1, dtype=np.int64)
    pos[val_images] = np.arange(len(val_images))
    caps = np.flatnonzero(pos[owner] >= 0)
    return val_images, caps, pos[owner[caps]]


def evaluate_heads(heads: ClipHeads, image_feats: np.ndarray, text_feats: np.ndarray, images: np.ndarray,
                   captions: np.ndarray, caption_owner: np.ndarray, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Retrieval recall of ``heads`` on the given photos and captions (tower outputs in, percent out)."""
    was_training = heads.training
    heads.eval()
    img = project(heads.embed_images, image_feats[images], device=device)
    txt = project(heads.embed_texts, text_feats[captions], device=device)
    heads.train(was_training)
    return retrieval_recall(img, txt, caption_owner)


# ---------------------------------------------------------------- a whole run from files


def validate_train_params(params: dict[str, Any]) -> dict[str, Any]:
    """Normalised parameters of a training run; InvalidInput naming the field otherwise."""
    from models.image_towers import image_tower_names
    from models.text_towers import ENCODER_NAMES

    p = dict(params)
    for key in ("images_dir", "captions", "image_tower", "text_tower"):
        if not isinstance(p.get(key), str) or not p[key].strip():
            raise InvalidInput(f"{key} is required", detail={"field": key})
    image_tower = p["image_tower"].strip()
    if image_tower not in image_tower_names() and not image_tower.endswith(".tflite"):
        raise InvalidInput(f"unknown image tower {image_tower!r}", detail={"field": "image_tower",
                                                                          "known": image_tower_names()})
    text_tower = p["text_tower"].strip()
    if any(part.lower() not in ENCODER_NAMES for part in text_tower.split("+")) and not text_tower.startswith("static:"):
        raise InvalidInput(f"unknown text tower {text_tower!r}", detail={"field": "text_tower",
                                                                         "known": [*ENCODER_NAMES, "static:<path>"]})
    config = {k: p[k] for k in ("head", "epochs", "val_fraction", "seed", "batch_size", "lr", "embed_dim", "patience")
              if p.get(k) is not None}
    config = {**(p.get("config") or {}), **config}
    p["config"] = asdict(ClipTrainConfig.from_dict(config))
    return p


def run_clip_training(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Load photos + captions, encode with the towers (cached), train, write the checkpoint; the result."""
    from models.image_towers import load_image_tower
    from models.text_towers import load_text_tower

    p = validate_train_params(params)
    config = ClipTrainConfig.from_dict(p["config"])
    t_start = time.perf_counter()
    data = load_captioned_set(p["images_dir"], p["captions"])
    train_idx, val_idx = split_images(len(data), config.val_fraction, config.seed)
    image_tower = load_image_tower(p["image_tower"], mobilenet_dir=p.get("mobilenet_dir"))
    text_tower = load_text_tower(p["text_tower"], language=p.get("language"))
    train_caps = np.flatnonzero(np.isin(data.owner, train_idx))
    if hasattr(text_tower, "fit_idf"):  # IDF from the training captions only
        text_tower.fit_idf([data.captions[j] for j in train_caps])
    cache_dir = p.get("cache_dir")
    img, img_hit = image_features(image_tower, data.images_dir, data.images, cache_dir=cache_dir, progress=progress)
    txt, txt_hit = text_features(text_tower, data.captions, cache_dir=cache_dir, progress=progress)
    t_train = time.perf_counter()
    heads, history, best = train_heads(img, txt, data.owner, train_idx, val_idx, config, progress)
    train_s = time.perf_counter() - t_train
    out_dir = Path(p.get("out_dir") or ".")
    languages = list(getattr(text_tower, "languages", ("*",)))
    meta = {"trained_at": time.time(), "data": {"images": len(data), "captions": len(data.captions),
                                                "train_images": int(len(train_idx)), "val_images": int(len(val_idx))},
            "config": asdict(config), "val": best.get("val"), "best_epoch": best.get("epoch")}
    ckpt = save_checkpoint(out_dir / p.get("checkpoint_name", "clip.pt"), heads, image_tower=p["image_tower"],
                           text_tower=p["text_tower"], text_state=getattr(text_tower, "state", lambda: None)(),
                           languages=languages, meta=meta)
    return {"checkpoint": str(ckpt), "image_tower": p["image_tower"], "text_tower": p["text_tower"],
            "languages": languages, "metrics": {"val": best.get("val"), "best_epoch": best.get("epoch"),
                                                "epochs_run": len(history)},
            "history": history, "cache": {"images": img_hit, "texts": txt_hit},
            "seconds": {"total": round(time.perf_counter() - t_start, 2), "train": round(train_s, 2)},
            "data": meta["data"]}
