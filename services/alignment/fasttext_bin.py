"""fastText ``.bin`` models: a structural check of the file before the ``fasttext`` module reads it, then the load.

Why the check: fastText's C++ loader trusts every size the file claims. A dictionary that claims
more words than the file holds makes it read past the end forever (one character per iteration,
growing a string until ``std::bad_alloc``: GBs from a 73-byte file), and a matrix or bucket count
that disagrees with the file makes it allocate or index whatever the header says. So the whole layout
is walked here first, without allocating anything the file's real size does not cover, and only a
file whose every claimed size is backed by its bytes reaches ``fasttext.load_model``.

Layout (fastText 0.9, file format versions 11 and 12): magic, version, 12 int32 args + a double,
the dictionary (sizes, then per entry a NUL-terminated word, an int64 count, an int8 type, then the
prune index), ``quant`` flag, the input matrix (int64 rows, int64 cols, float32 data), ``qout`` flag,
the output matrix. Quantized models (``.ftz``) are refused: their layout is not checked here.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

_MAGIC = 793712314
_VERSIONS = (11, 12)
_ARGS = struct.Struct("<12id")  # dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t
_DICT = struct.Struct("<iiiqq")  # size nwords nlabels ntokens pruneidx_size
_MATRIX = struct.Struct("<qq")
_ENTRY_TAIL = 9  # int64 count + int8 type after each word's NUL
# Longer n-gram ranges or words only make the loader's per-word subword lists (length x range) explode;
# real models use 3..6 and words of a few dozen bytes.
_MAX_NGRAM = 32
_MAX_WORD_BYTES = 4096


def check_fasttext_bin(path: Path, error) -> None:
    """Raise ``error(reason)`` unless ``path`` is a complete, unquantized fastText model whose sizes match its bytes."""
    size = path.stat().st_size
    header_end = 8 + _ARGS.size + _DICT.size
    if size < header_end:
        raise error(f"not a fastText .bin model (file of {size} bytes ends inside the header)")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        magic, version = struct.unpack_from("<ii", mm, 0)
        if magic != _MAGIC or version not in _VERSIONS:
            raise error("not a fastText .bin model (bad magic number or file format version)")
        dim, _ws, _epoch, _mincount, _neg, _wng, _loss, _model, bucket, minn, maxn, _lr, _t = _ARGS.unpack_from(mm, 8)
        n_size, nwords, nlabels, _ntokens, prune_size = _DICT.unpack_from(mm, 8 + _ARGS.size)
        if dim <= 0 or n_size < 0 or nwords < 0 or nlabels < 0 or nwords + nlabels != n_size:
            raise error("not a fastText .bin model (negative or inconsistent dimension or dictionary sizes)")
        if maxn > 0 and (bucket <= 0 or not 1 <= minn <= maxn <= _MAX_NGRAM):
            raise error(f"not a fastText .bin model (subword settings minn={minn} maxn={maxn} bucket={bucket} "
                        f"are invalid or above {_MAX_NGRAM})")
        # Every entry needs at least its NUL and 9 bytes: refuse a claim the file cannot hold before walking it.
        if n_size * (1 + _ENTRY_TAIL) > size - header_end:
            raise error(f"truncated fastText .bin model: the dictionary claims {n_size} words, "
                        f"more than the file's {size} bytes can hold")
        pos = _walk_dictionary(mm, header_end, n_size, size, error)
        if prune_size > 0:
            raise error("quantized or pruned fastText models are not supported; export the vectors as .vec")
        if pos + 1 > size or mm[pos] != 0:
            raise error("quantized fastText models are not supported (or the file is truncated); export a .vec")
        pos += 1
        rows = nwords + (bucket if maxn > 0 else 0)
        pos = _check_matrix(mm, pos, size, dim, rows, "input", error)
        if pos + 1 > size or mm[pos] != 0:
            raise error("quantized fastText output matrices are not supported (or the file is truncated)")
        pos = _check_matrix(mm, pos + 1, size, dim, 0, "output", error)
        if pos != size:
            raise error(f"not a fastText .bin model ({size - pos} unexpected bytes after the output matrix)")


def _walk_dictionary(mm: mmap.mmap, pos: int, n_size: int, size: int, error) -> int:
    """Offset after the dictionary entries; each word must end (NUL) inside the file and be short."""
    find = mm.find
    for i in range(n_size):
        end = find(b"\x00", pos, min(size, pos + _MAX_WORD_BYTES + 1))
        if end < 0:
            if pos + _MAX_WORD_BYTES + 1 <= size:
                raise error(f"not a fastText .bin model (word {i + 1} is longer than {_MAX_WORD_BYTES} bytes)")
            raise error(f"truncated fastText .bin model: the file ends inside dictionary word {i + 1} of {n_size}")
        pos = end + 1 + _ENTRY_TAIL
        if pos > size:
            raise error(f"truncated fastText .bin model: the file ends inside dictionary entry {i + 1} of {n_size}")
    return pos


def _check_matrix(mm: mmap.mmap, pos: int, size: int, dim: int, min_rows: int, which: str, error) -> int:
    if pos + _MATRIX.size > size:
        raise error(f"truncated fastText .bin model: the file ends before the {which} matrix")
    rows, cols = _MATRIX.unpack_from(mm, pos)
    pos += _MATRIX.size
    if cols != dim or rows < min_rows:
        raise error(f"not a fastText .bin model ({which} matrix is {rows}x{cols}; expected at least "
                    f"{min_rows} rows of dimension {dim})")
    # Python ints: no overflow, and the claim is compared to the bytes left before anything is allocated.
    if rows * cols * 4 > size - pos:
        raise error(f"truncated fastText .bin model: the {which} matrix claims {rows}x{cols} floats, "
                    f"more than the {size - pos} bytes left")
    return pos + rows * cols * 4


def load_fasttext_bin(path: Path, max_vocab: int | None, dtype: np.dtype, problems, error):
    """(words, vectors) of a checked model; word vectors include subword n-grams, as fastText's own .vec export."""
    try:
        import fasttext  # lazy: optional dependency (fasttext-wheel)
        import fasttext.FastText as _ft
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise error("reading fastText .bin needs the 'fasttext' module (pip install fasttext-wheel)") from exc
    check_fasttext_bin(path, error)
    # The wrapper prints a deprecation banner on every load_model; silence it.
    _ft.eprint = lambda *args, **kwargs: None
    try:
        model = fasttext.load_model(str(path))
    except Exception as exc:  # fasttext raises ValueError/RuntimeError on non-model files
        raise error(f"not a fastText .bin model ({exc})") from exc
    try:
        words = list(model.get_words(on_unicode_error="strict"))
    except UnicodeDecodeError:
        words = list(model.get_words(on_unicode_error="replace"))
        for i, w in enumerate(words):
            if "\ufffd" in w:
                problems.add("non-UTF-8 words", f"word {i + 1}")
    if max_vocab is not None:
        words = words[:max_vocab]
    vectors = np.empty((len(words), model.get_dimension()), dtype=np.float32)
    for i, w in enumerate(words):
        vectors[i] = model.get_word_vector(w)
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        if w in seen:
            problems.add("duplicate words", f"word {i + 1} ({w!r}, first at word {seen[w] + 1})")
        else:
            seen[w] = i
    for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1)):
        problems.add("NaN/inf rows", f"word {i + 1} ({words[i]!r})")
    problems.raise_if_any()
    return words, vectors.astype(dtype, copy=False)
