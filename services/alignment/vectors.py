"""Static word vectors: loading, saving, fingerprinting and normalisation.

Formats (methods.md, notation: X (n×d) rows in vocabulary order):
- fastText / word2vec text (``.vec``, ``.txt``, optionally gzipped), header line ``n d`` optional;
- fastText binary (``.bin``) through the ``fasttext`` module (imported lazily), after a structural check of
  the sizes its header claims (:mod:`services.alignment.fasttext_bin`);
- NumPy ``.npy`` (n×d) with a sibling ``<stem>.vocab.txt``, one word per line.

Reading is bounded for untrusted files: no line longer than :data:`MAX_LINE_BYTES` is read whole, and
``max_decompressed_bytes`` caps the bytes a text file (gzipped or not) may expand to.

Bad rows are never kept silently: duplicate words, rows of the wrong length, non-UTF-8 bytes
and rows holding NaN/inf are collected (with line numbers) and reported in one
:class:`VectorFileError`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.alignment.normalization import (  # noqa: F401  (re-exported: callers import them from here)
    NORMALIZATION_STEPS,
    ROW_NORM_CHUNK,
    normalize,
    parse_pipeline,
    row_norms,
)
from services.errors import InvalidInput

__all__ = [
    "NORMALIZATION_STEPS",
    "VectorFileError",
    "WordVectors",
    "load_vectors",
    "normalize",
    "save_vectors",
    "vocab_path_for",
]

# Offending lines listed per problem kind; the count of all of them is always reported.
_MAX_REPORTED = 10
# Text rows parsed per vectorised batch: bounds the temporary string and array memory.
_TEXT_BATCH_ROWS = 8192
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
            digest = hashlib.sha256()
            digest.update(f"{self.vectors.shape[0]}x{self.vectors.shape[1]}:{self.vectors.dtype.str}\n".encode())
            digest.update("\n".join(self.words).encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
            digest.update(np.ascontiguousarray(self.vectors).tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def subset(self, n: int) -> WordVectors:
        """The first ``n`` words (most frequent first)."""
        return WordVectors(self.words[:n], self.vectors[:n])

    def with_vectors(self, vectors: np.ndarray) -> WordVectors:
        """Same vocabulary, new vectors (e.g. normalised or mapped)."""
        return WordVectors(list(self.words), vectors)


class _Problems:
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


def vocab_path_for(npy_path: Path | str) -> Path:
    """``dir/en.npy`` -> ``dir/en.vocab.txt``."""
    p = Path(npy_path)
    return p.with_name(p.stem + ".vocab.txt")


def _infer_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        aliases = {"vec": "text", "txt": "text", "text": "text", "word2vec": "text", "bin": "bin", "fasttext": "bin", "npy": "npy"}
        if f not in aliases:
            raise VectorFileError(f"{path}: unknown vector format {fmt!r} (use vec, bin or npy)", detail={"path": str(path)})
        return aliases[f]
    name = path.name.lower()
    name = name.removesuffix(".gz")
    if name.endswith((".vec", ".txt")):
        return "text"
    if name.endswith(".bin"):
        return "bin"
    if name.endswith(".npy"):
        return "npy"
    raise VectorFileError(
        f"{path}: cannot tell the vector format from the file name (expected .vec, .txt, .bin or .npy)",
        detail={"path": str(path)},
    )


def load_vectors(path, *, max_vocab: int | None = None, fmt: str | None = None, dtype=np.float32,
                 max_decompressed_bytes: int | None = None) -> WordVectors:
    """Load word vectors (text .vec, fastText .bin, or .npy + .vocab.txt); first ``max_vocab`` words only.

    ``max_decompressed_bytes`` (for untrusted files) bounds what text files and vocabularies may expand to.
    """
    p = Path(path)
    if max_vocab is not None and max_vocab <= 0:
        raise InvalidInput(f"max_vocab must be positive, got {max_vocab}")
    kind = _infer_format(p, fmt)
    if not p.is_file():
        raise VectorFileError(f"{p}: no such file", detail={"path": str(p)})
    dtype = np.dtype(dtype)
    try:
        if kind == "text":
            wv = _load_text(p, max_vocab, dtype, max_decompressed_bytes)
        elif kind == "bin":
            wv = _load_fasttext_bin(p, max_vocab, dtype)
        else:
            wv = _load_npy(p, max_vocab, dtype, max_decompressed_bytes)
    except VectorFileError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise VectorFileError(f"{p}: cannot read: {exc}", detail={"path": str(p)}) from exc
    if len(wv) == 0:
        raise VectorFileError(f"{p}: no word vectors in file", detail={"path": str(p)})
    return wv


# --------------------------------------------------------------------------- text


def _open_binary(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _bounded_lines(fh, path: Path, max_total: int | None):
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


def _split_word(line: str) -> tuple[str, str]:
    # Words may hold non-ASCII whitespace (U+00A0 in fastText files), so split on ASCII space/tab only.
    word, _, rest = line.partition(" ")
    if "\t" in word:
        word, _, head = word.partition("\t")
        rest = head + " " + rest
    return word, rest


def _parse_header(tokens: list[str]) -> tuple[int, int] | None:
    if len(tokens) == 2 and tokens[0].isdigit() and tokens[1].isdigit():
        return int(tokens[0]), int(tokens[1])
    return None


def _load_text(path: Path, max_vocab: int | None, dtype: np.dtype, max_total: int | None = None) -> WordVectors:
    problems = _Problems(path)
    words: list[str] = []
    blocks: list[np.ndarray] = []
    first_line_of: dict[str, int] = {}
    dim: int | None = None
    header_count: int | None = None

    batch_words: list[str] = []
    batch_rest: list[str] = []
    batch_lines: list[int] = []

    def flush() -> None:
        if not batch_words:
            return
        block = _parse_text_batch(batch_rest, batch_lines, dim, problems, dtype)
        # Rows with problems are dropped here (and reported once the whole file is read).
        values, keep = block
        for i in np.flatnonzero(keep):
            words.append(batch_words[i])
        blocks.append(values[keep].astype(dtype, copy=False))
        batch_words.clear()
        batch_rest.clear()
        batch_lines.clear()

    accepted = 0
    with _open_binary(path) as fh:
        for lineno, raw in _bounded_lines(fh, path, max_total):
            if max_vocab is not None and accepted >= max_vocab:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add("non-UTF-8 lines", f"line {lineno} (byte {exc.start})")
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                # A blank final line is common; blank lines carry no word, so skip them.
                continue
            if lineno == 1:
                header = _parse_header(line.split())
                if header is not None:
                    header_count, dim = header
                    continue
            word, rest = _split_word(line)
            if not word:
                problems.add("malformed lines", f"line {lineno}: starts with a separator (empty word)")
                continue
            n_values = len(rest.split())
            if dim is None:
                dim = n_values
                if dim == 0:
                    problems.add("malformed lines", f"line {lineno}: word without values")
                    dim = None
                    continue
            if n_values != dim:
                problems.add("wrong-length rows", f"line {lineno} ({word!r}): {n_values} values, expected {dim}")
                continue
            if word in first_line_of:
                problems.add("duplicate words", f"line {lineno} ({word!r}, first at line {first_line_of[word]})")
                continue
            first_line_of[word] = lineno
            batch_words.append(word)
            batch_rest.append(rest)
            batch_lines.append(lineno)
            accepted += 1
            if len(batch_words) >= _TEXT_BATCH_ROWS:
                flush()
        flush()

    if header_count is not None and max_vocab is None and not problems and len(words) != header_count:
        problems.add("header mismatches", f"line 1 announces {header_count} vectors, file holds {len(words)}")
    problems.raise_if_any()
    if dim is None:
        raise VectorFileError(f"{path}: no word vectors in file", detail={"path": str(path)})
    vectors = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, dim), dtype=dtype)
    return WordVectors(words, np.ascontiguousarray(vectors))


def _parse_text_batch(
    rests: list[str], lines: list[int], dim: int | None, problems: _Problems, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Parse value strings (row lengths already checked) into ``dtype``; flag unparsable/NaN/inf rows."""
    n = len(rests)
    assert dim is not None
    flat = None
    with warnings.catch_warnings():
        # NumPy signals an unparsable token with a DeprecationWarning (later a ValueError).
        warnings.simplefilter("error", DeprecationWarning)
        try:
            flat = np.fromstring(" ".join(rests), dtype=np.float64, sep=" ")
        except (DeprecationWarning, ValueError):
            flat = None
    keep = np.ones(n, dtype=bool)
    if flat is not None and flat.size == n * dim:
        values = flat.reshape(n, dim)
    else:
        # Some token is not a number: fall back to per-row parsing to find the lines.
        values = np.zeros((n, dim), dtype=np.float64)
        for i, rest in enumerate(rests):
            try:
                values[i] = np.array(rest.split(), dtype=np.float64)
            except ValueError:
                bad = next(t for t in rest.split() if not _is_float(t))
                problems.add("non-numeric rows", f"line {lines[i]}: {bad[:20]!r}")
                keep[i] = False
    finite = np.isfinite(values).all(axis=1)
    # Overflow in the stored dtype turns huge values into inf: those rows are as unusable as NaN rows.
    with np.errstate(over="ignore", invalid="ignore"):
        finite &= np.isfinite(values.astype(dtype)).all(axis=1)
    for i in np.flatnonzero(keep & ~finite):
        problems.add("NaN/inf rows", f"line {lines[i]}")
    keep &= finite
    values[~keep] = 0  # dropped rows; zeroing keeps the cast below free of overflow
    return values.astype(dtype), keep


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- fastText .bin


def _load_fasttext_bin(path: Path, max_vocab: int | None, dtype: np.dtype) -> WordVectors:
    from services.alignment.fasttext_bin import load_fasttext_bin

    def error(reason: str) -> VectorFileError:
        return VectorFileError(f"{path}: {reason}", detail={"path": str(path)})

    words, vectors = load_fasttext_bin(path, max_vocab, dtype, _Problems(path), error)
    return WordVectors(words, vectors)


# --------------------------------------------------------------------------- .npy + vocab


def _read_vocab(vocab_path: Path, limit: int | None, problems: _Problems, max_total: int | None = None) -> list[str]:
    words: list[str] = []
    seen: dict[str, int] = {}
    with open(vocab_path, "rb") as fh:
        for lineno, raw in _bounded_lines(fh, vocab_path, max_total):
            if limit is not None and lineno > limit:
                break
            try:
                word = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                problems.add("non-UTF-8 lines", f"{vocab_path.name} line {lineno} (byte {exc.start})")
                words.append("\ufffd")
                continue
            if not word.strip():
                problems.add("empty words", f"{vocab_path.name} line {lineno}")
            elif word in seen:
                problems.add("duplicate words", f"{vocab_path.name} line {lineno} ({word!r}, first at line {seen[word]})")
            else:
                seen[word] = lineno
            words.append(word)
    return words


def _load_npy(path: Path, max_vocab: int | None, dtype: np.dtype, max_total: int | None = None) -> WordVectors:
    vocab_path = vocab_path_for(path)
    if not vocab_path.is_file():
        raise VectorFileError(f"{path}: missing vocabulary file {vocab_path.name} beside it", detail={"path": str(path)})
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise VectorFileError(f"{path}: not a readable .npy array ({exc})", detail={"path": str(path)}) from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise VectorFileError(f"{path}: expected a 2-d float array, got {matrix.dtype} {matrix.shape}", detail={"path": str(path)})
    problems = _Problems(path)
    words = _read_vocab(vocab_path, max_vocab, problems, max_total)
    n_rows = matrix.shape[0] if max_vocab is None else min(matrix.shape[0], max_vocab)
    if len(words) != n_rows:
        problems.add("size mismatches", f"{vocab_path.name} has {len(words)} words, array has {n_rows} rows")
        problems.raise_if_any()
    with np.errstate(over="ignore", invalid="ignore"):
        vectors = np.array(matrix[:n_rows], dtype=dtype)
    # Checked after the cast: values too large for the requested dtype become inf there.
    for i in _nonfinite_rows(vectors):
        problems.add("NaN/inf rows", f"row {i} ({vocab_path.name} line {i + 1}, {words[i]!r})")
    problems.raise_if_any()
    return WordVectors(words, vectors)


def _nonfinite_rows(V: np.ndarray) -> np.ndarray:
    """Rows holding a NaN or inf, checked in row chunks (no boolean temporary the size of V)."""
    bad = [s + np.flatnonzero(~np.isfinite(V[s : s + ROW_NORM_CHUNK]).all(axis=1))
           for s in range(0, len(V), ROW_NORM_CHUNK)]
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- saving


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_words_for_lines(wv: WordVectors, *, allow_space: bool) -> None:
    bad = [w for w in wv.words if (not allow_space and (" " in w or "\t" in w)) or "\n" in w or "\r" in w or not w]
    if bad:
        raise InvalidInput(f"cannot save {len(bad)} word(s) that contain separators or are empty, e.g. {bad[0]!r}")


def save_vectors(path, wv: WordVectors) -> None:
    """Write ``.vec`` text (with header) or ``.npy`` + ``.vocab.txt``, chosen by suffix; atomic."""
    p = Path(path)
    kind = _infer_format(p, None)
    if kind == "bin":
        raise InvalidInput(f"{p}: writing fastText .bin is not supported; use .vec or .npy")
    if kind == "npy":
        _check_words_for_lines(wv, allow_space=True)
        _atomic_write(p, lambda fh: np.save(fh, np.ascontiguousarray(wv.vectors), allow_pickle=False))
        _atomic_write(vocab_path_for(p), lambda fh: fh.write(("\n".join(wv.words) + "\n").encode("utf-8")))
        return
    _check_words_for_lines(wv, allow_space=False)

    def write(fh) -> None:
        out = gzip.GzipFile(fileobj=fh, mode="wb") if p.name.lower().endswith(".gz") else fh
        out.write(f"{len(wv)} {wv.dim}\n".encode())
        for start in range(0, len(wv), _TEXT_BATCH_ROWS):
            block = np.asarray(wv.vectors[start : start + _TEXT_BATCH_ROWS], dtype=np.float32)
            buf = io.StringIO()
            np.savetxt(buf, block, fmt="%.6g", delimiter=" ")
            rows = buf.getvalue().splitlines()
            out.write(
                "".join(f"{w} {r}\n" for w, r in zip(wv.words[start : start + _TEXT_BATCH_ROWS], rows)).encode("utf-8")
            )
        if out is not fh:
            out.close()

    _atomic_write(p, write)
