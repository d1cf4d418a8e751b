"""A compact CLIP: two locked pretrained towers + trained projection heads (the LiT recipe).

Zhai et al. (2022), "LiT: Zero-Shot Transfer with Locked-image text Tuning", section 3: a
pretrained image model is kept locked and a text model is trained to match it. Here *both*
towers are locked (a MobileNet from TFLite, a sentence encoder or static word vectors) and only
two small heads learn, with CLIP's symmetric InfoNCE and a learned temperature (Radford et al.
2021, section 2.3, Figure 3). Training lives in services/clip/training.py; the heads and their losses
in models/clip_heads.py (re-exported here); this module is the model: language centring, the
checkpoint format, and :class:`CompactClip`, which has the methods of
models.clip.ClipEncoder (``encode_text``, ``encode_images``, ``embed_dim``, ``identity``...) so a
trained checkpoint is a CLIP everywhere vislex takes one.

Language centring (:class:`TextCentres`): multilingual sentence encoders put a language-specific
offset on every sentence (Libovický et al. 2020, "On the language neutrality of pre-trained
multilingual representations", section 3: subtracting each language's mean representation makes
them markedly more language-neutral). A linear head cannot undo a per-language shift (a global
shift is only a bias), so a checkpoint may carry each training language's mean tower output; a
text's tower row has its language's mean subtracted *before* the text head, in training and at
query time alike -- :meth:`CompactClip.text_features_to_clip` is the one place that embeds text.
A text whose language is not given (or has no stored mean) gets the nearest stored mean
(nearest-centroid language identification, which these representations make easy: Libovický et
al., section 4.1).

Checkpoint: a ``torch.save`` dict (loaded with ``weights_only=True``: tensors and plain types
only) with ``format = "vislex-compact-clip"``, the tower names, the heads' state and config,
the static text tower's IDF table when it has one, the per-language text centres when the model
was trained with them (``text_centres``: language -> mean row; version 2 -- a version-1
checkpoint has none and loads as before), optionally a per-language linear map applied after the
centring (``text_maps``: language -> d x d matrix; version 3; services/clip/languages.py fits them),
and provenance (data, metrics, time).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from models.clip_heads import (HEAD_KINDS, ClipHeads, Head, HeadConfig, clip_loss,  # noqa: F401 -- re-exported
                               multi_positive_loss, project)
from services.errors import InvalidInput, Unavailable

FORMAT = "vislex-compact-clip"
VERSION = 3  # 2: optional per-language text centres; 3: and per-language maps (a checkpoint without either: version 1)


# ---------------------------------------------------------------- language centring


class TextCentres:
    """Per-language mean tower outputs, subtracted from text rows before the text head (see the module doc).

    ``apply(feats, lang)``: ``lang`` one code for every row, a sequence of codes (one per row), or None.
    A row whose code is None or has no stored mean takes the nearest stored mean (Euclidean, i.e. the
    largest ``x . m - |m|^2 / 2``): nearest-centroid language identification.
    """

    def __init__(self, means: dict[str, np.ndarray], maps: dict[str, np.ndarray] | None = None):
        if not means:
            raise InvalidInput("text centres need at least one language", detail={"field": "text_centres"})
        self.languages = tuple(sorted(means))
        self.means = np.stack([np.asarray(means[l], dtype=np.float32).reshape(-1) for l in self.languages])
        self._index = {l: i for i, l in enumerate(self.languages)}
        d = self.means.shape[1]
        self.maps = {str(l): np.asarray(a, dtype=np.float32) for l, a in (maps or {}).items()}
        if any(l not in self._index or a.shape != (d, d) for l, a in self.maps.items()):
            raise InvalidInput(f"text maps must be {d}x{d} and belong to a centred language",
                               detail={"field": "text_maps"})

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(cls, feats: np.ndarray, languages: Sequence[str | None], min_rows: int = 1) -> "TextCentres | None":
        """Each language's mean row of ``feats`` (rows whose language is None are left out); None if no language
        has ``min_rows`` rows."""
        langs = np.asarray([l if l is not None else "" for l in languages], dtype=object)
        means = {}
        for lang in sorted(set(langs.tolist()) - {""}):
            rows = np.flatnonzero(langs == lang)
            if len(rows) >= min_rows:
                means[str(lang)] = np.asarray(feats[rows], dtype=np.float64).mean(axis=0).astype(np.float32)
        return cls(means) if means else None

    def identify(self, feats: np.ndarray) -> np.ndarray:
        """Index (into :attr:`languages`) of each row's nearest mean."""
        feats = np.asarray(feats, dtype=np.float32)
        return np.argmax(feats @ self.means.T - 0.5 * (self.means ** 2).sum(axis=1)[None, :], axis=1)

    def rows_for(self, feats: np.ndarray, lang: str | Sequence[str | None] | None) -> np.ndarray:
        """Index of the mean each row takes (given language, else nearest)."""
        n = len(feats)
        if isinstance(lang, str) or lang is None:
            if lang in self._index:
                return np.full(n, self._index[lang], dtype=np.int64)
            return self.identify(feats)
        codes = list(lang)
        if len(codes) != n:
            raise InvalidInput(f"{len(codes)} language codes for {n} texts", detail={"field": "lang"})
        idx = np.asarray([self._index.get(c, -1) if c is not None else -1 for c in codes], dtype=np.int64)
        unknown = np.flatnonzero(idx < 0)
        if len(unknown):
            idx[unknown] = self.identify(np.asarray(feats)[unknown])
        return idx

    def apply(self, feats: np.ndarray, lang: str | Sequence[str | None] | None = None) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        if len(feats) == 0:
            return feats
        if feats.shape[1] != self.dim:
            raise CheckpointError(f"text centres are {self.dim}-d; the text rows {feats.shape[1]}-d",
                                  detail={"reason": "mismatched_towers"})
        idx = self.rows_for(feats, lang)
        out = feats - self.means[idx]
        for lang_code, matrix in self.maps.items():  # a language's own linear map after its centring
            rows = np.flatnonzero(idx == self._index[lang_code])
            if len(rows):
                out[rows] = out[rows] @ matrix
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {lang: torch.as_tensor(self.means[i].copy()) for i, lang in enumerate(self.languages)}

    def maps_state(self) -> dict[str, torch.Tensor]:
        return {lang: torch.as_tensor(a.copy()) for lang, a in sorted(self.maps.items())}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, maps: dict[str, Any] | None = None) -> "TextCentres | None":
        if not state:
            return None

        def arr(v):
            return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return cls({str(k): arr(v) for k, v in state.items()}, {str(k): arr(v) for k, v in (maps or {}).items()})


# ---------------------------------------------------------------- checkpoint


class CheckpointError(InvalidInput):
    code = "invalid_checkpoint"


def save_checkpoint(path: str | os.PathLike, heads: ClipHeads, *, image_tower: str, text_tower: str,
                    text_state: dict[str, Any] | None = None, languages: Sequence[str] = ("*",),
                    meta: dict[str, Any] | None = None, text_centres: TextCentres | None = None) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a checkpoint. Version 1 unless the
    checkpoint carries text centres (version 2; 3 with per-language maps): an older vislex would silently
    ignore them, so it refuses the higher version."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if text_centres is not None and text_centres.dim != heads.config.text_dim:
        raise CheckpointError(f"text centres are {text_centres.dim}-d; the text head takes {heads.config.text_dim}-d",
                              detail={"reason": "mismatched_towers"})
    blob = {
        "format": FORMAT, "version": 2 if text_centres is not None else 1, "image_tower": image_tower,
        "text_tower": text_tower,
        "head": asdict(heads.config), "state_dict": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
        "text_state": {k: torch.as_tensor(np.asarray(v)) for k, v in (text_state or {}).items()},
        "languages": list(languages), "meta": meta or {},
    }
    if text_centres is not None:
        blob["text_centres"] = text_centres.state()
        if text_centres.maps:  # version 3: per-language maps, which a version-2 reader would silently drop
            blob["version"] = 3
            blob["text_maps"] = text_centres.maps_state()
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
                 languages: Sequence[str], meta: dict[str, Any] | None = None, spec: Any = None,
                 centres: TextCentres | None = None):
        cfg = heads.config
        if centres is not None and centres.dim != cfg.text_dim:
            raise CheckpointError(f"text centres are {centres.dim}-d; the text head takes {cfg.text_dim}-d",
                                  detail={"reason": "mismatched_towers"})
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
        self.centres = centres
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
                "text_centring": {"kind": "language", "languages": list(self.centres.languages),
                                  **({"maps": sorted(self.centres.maps)} if self.centres.maps else {})}
                if self.centres is not None else {"kind": "none"},
                "trained": {k: self.meta.get(k) for k in ("trained_at", "data", "val") if k in self.meta}}

    def centre_text_features(self, feats: np.ndarray, lang: str | Sequence[str | None] | None = None) -> np.ndarray:
        """Tower rows with their language's mean subtracted (unchanged when the model has no centres)."""
        return feats if self.centres is None else self.centres.apply(feats, lang)

    def text_features_to_clip(self, feats: np.ndarray, lang: str | Sequence[str | None] | None = None) -> np.ndarray:
        """Text tower rows -> unit rows in the CLIP space: the single place a compact CLIP embeds text (centring,
        then the text head). ``lang``: the texts' language (one code or one per row); None identifies it."""
        feats = self.centre_text_features(feats, lang)
        with self._lock:
            return project(self.heads.embed_texts, feats)

    def image_features_to_clip(self, feats: np.ndarray) -> np.ndarray:
        with self._lock:
            return project(self.heads.embed_images, feats)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256, lang: str | None = None) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.text_features_to_clip(self.text_tower.encode_text(texts, batch_size=batch_size), lang)

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
    try:
        centres = TextCentres.from_state(blob.get("text_centres"), blob.get("text_maps"))
    except (InvalidInput, ValueError) as e:
        raise CheckpointError(f"{p.name}: unreadable text centres: {e}", detail={"path": p.name}) from e
    return CompactClip(heads, image_tower, text_tower, label=label or f"compact:{p.name}", identity=identity,
                       languages=blob.get("languages") or ("*",), meta=blob.get("meta") or {}, spec=spec,
                       centres=centres)
