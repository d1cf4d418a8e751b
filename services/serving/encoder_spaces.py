"""Encoder-derived word spaces: a language's top-N ``wordfreq`` words embedded by a multilingual text encoder.

All languages embedded by one multilingual encoder live in one shared space, so the identity
maps between any two of them (the embedded default needs no download and no alignment).
Built once and cached on disk under ``cache_dir/encoder_spaces`` (atomic writes), keyed by
encoder, language, N and the wordfreq version.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.alignment.vectors import WordVectors, load_vectors, save_vectors
from services.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["encoder_vocabulary", "encoder_space_path", "build_encoder_vectors", "wordfreq_version"]

_CACHE_FORMAT = 1


def wordfreq_version() -> str:
    try:
        return version("wordfreq")
    except PackageNotFoundError:  # pragma: no cover - dependency
        return "unknown"


def encoder_vocabulary(lang: str, n: int) -> list[str]:
    """The ``n`` most frequent words of ``lang`` by wordfreq (most frequent first, NFC, no blanks)."""
    import unicodedata

    import wordfreq

    if lang not in wordfreq.available_languages():
        raise InvalidInput(f"wordfreq has no word list for language {lang!r}",
                           detail={"lang": lang, "known": sorted(wordfreq.available_languages())})
    words, seen = [], set()
    for w in wordfreq.top_n_list(lang, n):
        w = unicodedata.normalize("NFC", w.strip())
        if w and w not in seen and not any(c in w for c in "\t\n\r"):
            seen.add(w)
            words.append(w)
    return words


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def encoder_space_path(cache_dir: Path, encoder_name: str, lang: str, n: int) -> Path:
    """Cache file for (encoder, language, N, wordfreq version)."""
    tag = hashlib.sha256(f"{_CACHE_FORMAT}|{encoder_name}|{lang}|{n}|{wordfreq_version()}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "encoder_spaces" / f"{_slug(encoder_name)}-{lang}-{n}-{tag}.npy"


def build_encoder_vectors(lang: str, n: int, *, encoder_name: str, cache_dir: Path | None,
                          encoder_factory: Callable[[str], Any] | None = None,
                          words: list[str] | None = None) -> WordVectors:
    """Word vectors of the top-``n`` words of ``lang`` under ``encoder_name`` (unit rows; cached on disk).

    ``encoder_factory(name)`` defaults to :func:`models.text_encoders.load_text_encoder`;
    ``words`` overrides the wordfreq vocabulary (tests).
    """
    path = encoder_space_path(cache_dir, encoder_name, lang, n) if cache_dir is not None and words is None else None
    if path is not None and path.is_file():
        try:
            return load_vectors(path)
        except Exception:  # a damaged cache entry is rebuilt, never served
            log.warning("damaged encoder-space cache entry; rebuilding", extra={"path": str(path)})
    if encoder_factory is None:
        from models.text_encoders import load_text_encoder as encoder_factory
    encoder = encoder_factory(encoder_name)
    vocab = words if words is not None else encoder_vocabulary(lang, n)
    start = time.perf_counter()
    vectors = np.ascontiguousarray(encoder.encode(vocab), dtype=np.float32)
    log.info("encoder space built", extra={"lang": lang, "words": len(vocab), "encoder": encoder_name,
                                           "seconds": round(time.perf_counter() - start, 2)})
    wv = WordVectors(vocab, vectors)
    if path is not None:
        save_vectors(path, wv)
    return wv
