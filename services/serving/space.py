"""A served word space: vocabulary, unit-normalised vectors, and query-word normalisation.

Words are matched after the normalisation the space's vocabulary used: Unicode NFC always,
case folding (``str.casefold``, applied to the vocabulary's keys and to queries alike, so German
``Straße`` finds wordfreq's ``strasse`` and ``GROSS`` finds ``groß``) when the vocabulary is lowercased.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from services.errors import InvalidInput, NotFound

__all__ = ["WordSpace", "normalize_query_word", "is_lowercased_vocabulary"]

# Vocabularies with at most this share of words that change under lower() count as lowercased
# (a stray "I" or "NASA" in a lowercased corpus should not disable case folding).
_LOWERCASE_TOLERANCE = 0.005


def is_lowercased_vocabulary(words: list[str]) -> bool:
    """True when (almost) every word equals its own ``lower()``."""
    if not words:
        return True
    cased = sum(1 for w in words if w != w.lower())
    return cased <= _LOWERCASE_TOLERANCE * len(words)


def normalize_query_word(word: str, *, lowercase: bool) -> str:
    """NFC, surrounding whitespace stripped, case-folded for lowercased vocabularies."""
    key = unicodedata.normalize("NFC", word.strip())
    # casefold after NFC, then NFC again: folding can decompose (e.g. "İ" -> "i" + combining dot).
    return unicodedata.normalize("NFC", key.casefold()) if lowercase else key


@dataclass(eq=False)
class WordSpace:
    """One language's vocabulary and unit-row vectors (storage dtype float32 or float16).

    ``group`` names a shared embedding space (e.g. one multilingual encoder): spaces of one
    group are aligned already, so the identity maps between them.
    """

    lang: str
    words: list[str]
    vectors: np.ndarray
    source: str
    group: str | None = None
    fingerprint: str = ""
    lowercase: bool = field(default=False)
    _keys: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, lang: str, words: list[str], unit_vectors: np.ndarray, *, source: str,
              group: str | None = None, fingerprint: str = "", storage_dtype: str = "float32") -> "WordSpace":
        """Index the vocabulary (first occurrence wins after normalisation); vectors must be unit rows."""
        if unit_vectors.ndim != 2 or unit_vectors.shape[0] != len(words):
            raise InvalidInput(f"space {lang!r}: {len(words)} words but vectors of shape {unit_vectors.shape}")
        lowercase = is_lowercased_vocabulary(words)
        keys: dict[str, int] = {}
        for row, word in enumerate(words):
            keys.setdefault(normalize_query_word(word, lowercase=lowercase), row)
        vectors = np.ascontiguousarray(unit_vectors, dtype=np.dtype(storage_dtype))
        return cls(lang=lang, words=list(words), vectors=vectors, source=source, group=group,
                   fingerprint=fingerprint, lowercase=lowercase, _keys=keys)

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def json_words(self) -> list[str]:
        """Each word as a JSON string literal (answers are assembled as text on the hot path)."""
        encode = json.JSONEncoder(ensure_ascii=False).encode
        return [encode(w) for w in self.words]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes)

    def key(self, word: str) -> str:
        return normalize_query_word(word, lowercase=self.lowercase)

    def row(self, word: str) -> int:
        """Row of ``word`` or -1 when it is out of vocabulary."""
        return self._keys.get(self.key(word), -1)

    def rows(self, words: list[str]) -> np.ndarray:
        """Rows of ``words`` (int64, -1 for out-of-vocabulary words)."""
        get = self._keys.get
        lower = self.lowercase
        return np.fromiter((get(normalize_query_word(w, lowercase=lower), -1) for w in words),
                           dtype=np.int64, count=len(words))

    def require_row(self, word: str) -> int:
        row = self.row(word)
        if row < 0:
            raise word_not_found(word, self.lang)
        return row

    def vectors_f32(self, rows: np.ndarray | None = None) -> np.ndarray:
        v = self.vectors if rows is None else self.vectors[rows]
        return np.ascontiguousarray(v, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"lang": self.lang, "vocab_size": len(self), "dim": self.dim, "source": self.source,
                "group": self.group, "dtype": str(self.vectors.dtype), "lowercased": self.lowercase,
                "fingerprint": self.fingerprint}


def word_not_found(word: str, lang: str) -> NotFound:
    return NotFound(f"word {word!r} is not in the {lang!r} vocabulary", code="word_not_found",
                    detail={"word": word, "lang": lang})
