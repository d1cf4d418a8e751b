"""Static word vectors: loading (one entry point per file, by format), normalising while loading, saving.

Formats (methods.md, notation: X (n×d) rows in vocabulary order):
- fastText / word2vec text (``.vec``, ``.txt``, optionally gzipped), header line ``n d`` optional;
- fastText binary (``.bin``) through the ``fasttext`` module (imported lazily), after a structural check of
  the sizes its header claims (:mod:`services.alignment.fasttext_bin`);
- NumPy ``.npy`` (n×d) with a sibling ``<stem>.vocab.txt``, one word per line.

Reading is bounded for untrusted files: no line longer than :data:`MAX_LINE_BYTES` is read whole, and
``max_decompressed_bytes`` caps the bytes a text file (gzipped or not) may expand to.

The types (WordVectors, VectorFileError) live in :mod:`services.alignment.word_vectors`, the text format in
:mod:`services.alignment.vector_text`, normalisation in :mod:`services.alignment.normalization`; their public
names stay importable from here.

Bad rows are never kept silently: duplicate words, rows of the wrong length, non-UTF-8 bytes
and rows holding NaN/inf are collected (with line numbers) and reported in one
:class:`VectorFileError`.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from services.alignment.normalization import (  # noqa: F401  (re-exported: callers import them from here)
    NORMALIZATION_STEPS,
    ROW_NORM_CHUNK,
    normalize,
    parse_pipeline,
    row_norms,
)
from services.alignment.vector_text import TEXT_BATCH_ROWS, load_text
from services.alignment.word_vectors import (  # noqa: F401  (re-exported)
    MAX_LINE_BYTES,
    Problems,
    VectorFileError,
    WordVectors,
    bounded_lines,
    fingerprint_digest,
)
from services.errors import InvalidInput

__all__ = [
    "NORMALIZATION_STEPS",
    "VectorFileError",
    "WordVectors",
    "load_normalized",
    "load_vectors",
    "normalize",
    "save_vectors",
    "vocab_path_for",
]


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
    p, kind = _checked_path(path, max_vocab, fmt)
    dtype = np.dtype(dtype)

    def read() -> WordVectors:
        if kind == "text":
            return load_text(p, max_vocab, dtype, max_decompressed_bytes)
        if kind == "bin":
            return _load_fasttext_bin(p, max_vocab, dtype)
        return _load_npy(p, max_vocab, dtype, max_decompressed_bytes)

    return _nonempty(p, _reading(p, read))


def load_normalized(path, pipeline: str | None, *, max_vocab: int | None = None, fmt: str | None = None,
                    dtype=np.float32, max_decompressed_bytes: int | None = None) -> tuple[WordVectors, str]:
    """``load_vectors`` then :func:`normalize` (``pipeline``), and the fingerprint of the vectors as loaded
    (``load_vectors(...).fingerprint()``, the key of caches and registrations); the same numbers and errors.

    For ``.npy`` the rows stream from the memory-mapped file straight into normalisation's first pass, which
    also checks them for NaN/inf and hashes them: one fresh array where loading, normalising and hashing made
    three (issue 18: at 200k x 300 each is 240 MB of page faults and memory traffic, the load's whole cost).
    """
    p, kind = _checked_path(path, max_vocab, fmt)
    dtype = np.dtype(dtype)
    if kind != "npy":
        wv = load_vectors(p, max_vocab=max_vocab, fmt=fmt, dtype=dtype, max_decompressed_bytes=max_decompressed_bytes)
        return wv.with_vectors(normalize(wv.vectors, pipeline)), wv.fingerprint()

    def read() -> tuple[WordVectors, str]:
        words, rows, problems = _open_npy(p, max_vocab, max_decompressed_bytes)
        digest = fingerprint_digest(words, rows.shape, dtype)

        def observe(start: int, chunk: np.ndarray) -> None:
            for i in start + np.flatnonzero(~np.isfinite(chunk).all(axis=1)):
                problems.add("NaN/inf rows", f"row {i} ({vocab_path_for(p).name} line {i + 1}, {words[i]!r})")
            digest.update(chunk)

        # Casting happens chunk by chunk inside normalize; values too large for ``dtype`` become inf and are
        # reported by ``observe`` (the NaN a bad row spreads through the centring is never returned).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            X = normalize(rows, pipeline, dtype=dtype, observe=observe)
        problems.raise_if_any()
        return WordVectors(words, X), digest.hexdigest()[:16]

    wv, fingerprint = _reading(p, read)
    return _nonempty(p, wv), fingerprint


def _checked_path(path, max_vocab: int | None, fmt: str | None) -> tuple[Path, str]:
    p = Path(path)
    if max_vocab is not None and max_vocab <= 0:
        raise InvalidInput(f"max_vocab must be positive, got {max_vocab}")
    kind = _infer_format(p, fmt)
    if not p.is_file():
        raise VectorFileError(f"{p}: no such file", detail={"path": str(p)})
    return p, kind


def _reading(p: Path, read):
    """``read()``, its OS and format errors reported as a VectorFileError naming the file."""
    try:
        return read()
    except VectorFileError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise VectorFileError(f"{p}: cannot read: {exc}", detail={"path": str(p)}) from exc


def _nonempty(p: Path, wv: WordVectors) -> WordVectors:
    if len(wv) == 0:
        raise VectorFileError(f"{p}: no word vectors in file", detail={"path": str(p)})
    return wv


# --------------------------------------------------------------------------- fastText .bin


def _load_fasttext_bin(path: Path, max_vocab: int | None, dtype: np.dtype) -> WordVectors:
    from services.alignment.fasttext_bin import load_fasttext_bin

    def error(reason: str) -> VectorFileError:
        return VectorFileError(f"{path}: {reason}", detail={"path": str(path)})

    words, vectors = load_fasttext_bin(path, max_vocab, dtype, Problems(path), error)
    return WordVectors(words, vectors)


# --------------------------------------------------------------------------- .npy + vocab


def _read_vocab(vocab_path: Path, limit: int | None, problems: Problems, max_total: int | None = None) -> list[str]:
    words: list[str] = []
    seen: dict[str, int] = {}
    with open(vocab_path, "rb") as fh:
        for lineno, raw in bounded_lines(fh, vocab_path, max_total):
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
    words, rows, problems = _open_npy(path, max_vocab, max_total)
    with np.errstate(over="ignore", invalid="ignore"):
        vectors = np.array(rows, dtype=dtype)
    # Checked after the cast: values too large for the requested dtype become inf there.
    for i in _nonfinite_rows(vectors):
        problems.add("NaN/inf rows", f"row {i} ({vocab_path_for(path).name} line {i + 1}, {words[i]!r})")
    problems.raise_if_any()
    return WordVectors(words, vectors)


def _open_npy(path: Path, max_vocab: int | None, max_total: int | None) -> tuple[list[str], np.ndarray, Problems]:
    """The vocabulary, the array's first rows as a read-only memory map (nothing read yet), and the problems
    collector; raises for a missing vocabulary, a non-float or non-2-d array, or sizes that disagree."""
    vocab_path = vocab_path_for(path)
    if not vocab_path.is_file():
        raise VectorFileError(f"{path}: missing vocabulary file {vocab_path.name} beside it", detail={"path": str(path)})
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise VectorFileError(f"{path}: not a readable .npy array ({exc})", detail={"path": str(path)}) from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise VectorFileError(f"{path}: expected a 2-d float array, got {matrix.dtype} {matrix.shape}", detail={"path": str(path)})
    problems = Problems(path)
    words = _read_vocab(vocab_path, max_vocab, problems, max_total)
    n_rows = matrix.shape[0] if max_vocab is None else min(matrix.shape[0], max_vocab)
    if len(words) != n_rows:
        problems.add("size mismatches", f"{vocab_path.name} has {len(words)} words, array has {n_rows} rows")
        problems.raise_if_any()
    return words, matrix[:n_rows], problems


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
        for start in range(0, len(wv), TEXT_BATCH_ROWS):
            block = np.asarray(wv.vectors[start : start + TEXT_BATCH_ROWS], dtype=np.float32)
            buf = io.StringIO()
            np.savetxt(buf, block, fmt="%.6g", delimiter=" ")
            rows = buf.getvalue().splitlines()
            out.write(
                "".join(f"{w} {r}\n" for w, r in zip(wv.words[start : start + TEXT_BATCH_ROWS], rows)).encode("utf-8")
            )
        if out is not fh:
            out.close()

    _atomic_write(p, write)
