"""The word-vector types every file format shares: :class:`WordVectors` (vocabulary + rows, fingerprint),
:class:`VectorFileError`, the per-kind problem collector that reports bad lines in one error, and the bounded
line reader untrusted text files and vocabularies go through.

Split out of :mod:`services.alignment.vectors` (formats, loading, saving), which re-exports the public names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.alignment.normalization import ROW_NORM_CHUNK
from services.errors import InvalidInput

__all__ = ["MAX_LINE_BYTES", "Problems", "VectorFileError", "WordVectors", "bounded_lines"]

# Offending lines listed per problem kind; the count of all of them is always reported.
_MAX_REPORTED = 10
# A 300-d fastText row is ~3 KB; a line longer than this is no word vector, and reading it whole is how a
# newline-free gzip bomb exhausts memory.
MAX_LINE_BYTES = 1 << 20


class VectorFileError(InvalidInput):
    """A word-vector file cannot be read or holds bad rows (the message names file and lines)."""

    code = "invalid_vector_file"


@dataclass(eq=False)
class WordVectors:
    """A vocabulary and its vectors, one row per word in vocabulary (frequency) order."""

    words: list[str]
    vectors: np.ndarray
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise InvalidInput(f"word vectors must be a 2-d array, got shape {self.vectors.shape}")
        if len(self.words) != self.vectors.shape[0]:
            raise InvalidInput(
                f"{len(self.words)} words but {self.vectors.shape[0]} vector rows",
                detail={"words": len(self.words), "rows": int(self.vectors.shape[0])},
            )

    @property
    def index(self) -> dict[str, int]:
        """Word -> row (cached; first occurrence wins, loaders reject duplicates anyway)."""
        if self._index is None:
            index: dict[str, int] = {}
            for row, word in enumerate(self.words):
                index.setdefault(word, row)
            self._index = index
        return self._index

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def fingerprint(self) -> str:
        """First 16 hex chars of sha256 over shape, dtype, vocabulary and vector bytes (cached)."""
        if self._fingerprint is None:
            digest = fingerprint_digest(self.words, self.vectors.shape, self.vectors.dtype)
            for start in range(0, len(self.vectors), ROW_NORM_CHUNK):  # no byte copy of the whole array
                digest.update(np.ascontiguousarray(self.vectors[start : start + ROW_NORM_CHUNK]))
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def subset(self, n: int) -> WordVectors:
        """The first ``n`` words (most frequent first)."""
        return WordVectors(self.words[:n], self.vectors[:n])

    def with_vectors(self, vectors: np.ndarray) -> WordVectors:
        """Same vocabulary, new vectors (e.g. normalised or mapped)."""
        return WordVectors(list(self.words), vectors)


def fingerprint_digest(words: list[str], shape: tuple[int, ...], dtype: np.dtype):
    """sha256 over shape, dtype and vocabulary; the caller adds the vector bytes in row order."""
    digest = hashlib.sha256()
    digest.update(f"{shape[0]}x{shape[1]}:{np.dtype(dtype).str}\n".encode())
    digest.update("\n".join(words).encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    return digest


class Problems:
    """Collects offending lines per kind and raises one VectorFileError at the end."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.by_kind: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        listed = self.by_kind.setdefault(kind, [])
        if len(listed) < _MAX_REPORTED:
            listed.append(message)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def raise_if_any(self) -> None:
        if not self.counts:
            return
        parts = []
        for kind, listed in self.by_kind.items():
            total = self.counts[kind]
            more = f" (+{total - len(listed)} more)" if total > len(listed) else ""
            parts.append(f"{total} {kind}: " + "; ".join(listed) + more)
        raise VectorFileError(
            f"{self.path}: " + " | ".join(parts),
            detail={"path": self.path, "problems": {k: self.by_kind[k] for k in self.by_kind}, "counts": dict(self.counts)},
        )


def bounded_lines(fh, path: Path, max_total: int | None):
    """(line number, raw line) pairs; stops with a VectorFileError at an over-long line or past ``max_total`` bytes.

    ``readline`` with a size never buffers more than that size, so neither limit is crossed in memory.
    """
    limit = MAX_LINE_BYTES
    total = 0
    lineno = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        total += len(raw)
        if max_total is not None and total > max_total:
            raise VectorFileError(f"{path}: decompressed content exceeds {max_total} bytes",
                                  detail={"path": str(path), "counts": {f"bytes past the decompressed limit of {max_total}": 1}})
        if len(raw) > limit:
            raise VectorFileError(f"{path}: line {lineno} is longer than {limit} bytes",
                                  detail={"path": str(path), "counts": {f"lines longer than {limit} bytes": 1}})
        yield lineno, raw
