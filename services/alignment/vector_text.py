"""fastText / word2vec text vectors (``.vec``, ``.txt``, optionally gzipped; header line ``n d`` optional):
parsed in vectorised batches, every bad row collected with its line number, bounded for untrusted files.

Split out of :mod:`services.alignment.vectors`, which dispatches to it by format.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

from services.alignment.word_vectors import Problems, VectorFileError, WordVectors, bounded_lines

# Text rows parsed per vectorised batch: bounds the temporary string and array memory.
TEXT_BATCH_ROWS = 8192


def open_binary(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


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


def load_text(path: Path, max_vocab: int | None, dtype: np.dtype, max_total: int | None = None) -> WordVectors:
    problems = Problems(path)
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
    with open_binary(path) as fh:
        for lineno, raw in bounded_lines(fh, path, max_total):
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
            if len(batch_words) >= TEXT_BATCH_ROWS:
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
    rests: list[str], lines: list[int], dim: int | None, problems: Problems, dtype: np.dtype
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
