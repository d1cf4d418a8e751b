"""load_normalized: one pass from the file to normalised rows, with the numbers, fingerprint and errors of
load_vectors + normalize, and (for .npy) one fresh array instead of three (issue 18)."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest

from services.alignment.normalization import ROW_NORM_CHUNK
from services.alignment.vectors import (
    VectorFileError,
    WordVectors,
    load_normalized,
    load_vectors,
    normalize,
    save_vectors,
)

ROWS = 3 * ROW_NORM_CHUNK + 123  # several chunks and a ragged last one


@pytest.fixture(scope="module")
def space() -> WordVectors:
    rng = np.random.default_rng(11)
    vectors = (rng.standard_normal((ROWS, 16)) + 0.3).astype(np.float32)
    vectors[7] = 0.0  # a zero row stays zero through every step
    return WordVectors([f"w{i}" for i in range(ROWS)], vectors)


@pytest.fixture(scope="module")
def npy_path(tmp_path_factory, space):
    path = tmp_path_factory.mktemp("npy") / "v.npy"
    save_vectors(path, space)
    return path


def old_fingerprint(wv: WordVectors) -> str:
    """WordVectors.fingerprint as it was written before chunked hashing (whole-array tobytes): cache keys
    and registrations saved by earlier versions must keep matching."""
    digest = hashlib.sha256()
    digest.update(f"{wv.vectors.shape[0]}x{wv.vectors.shape[1]}:{wv.vectors.dtype.str}\n".encode())
    digest.update("\n".join(wv.words).encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    digest.update(np.ascontiguousarray(wv.vectors).tobytes())
    return digest.hexdigest()[:16]


def test_fingerprint_is_unchanged_by_chunked_hashing(space):
    assert WordVectors(space.words, space.vectors).fingerprint() == old_fingerprint(space)
    fortran = WordVectors(space.words, np.asfortranarray(space.vectors))  # rows not contiguous: copied per chunk
    assert fortran.fingerprint() == old_fingerprint(space)


@pytest.mark.parametrize("pipeline", ["unit,center,unit", "center", "unit", "none", "center,unit,center"])
@pytest.mark.parametrize("max_vocab", [None, ROW_NORM_CHUNK + 5])
def test_npy_equals_load_then_normalize_bit_for_bit(npy_path, pipeline, max_vocab):
    loaded = load_vectors(npy_path, max_vocab=max_vocab)
    got, fingerprint = load_normalized(npy_path, pipeline, max_vocab=max_vocab)
    assert got.words == loaded.words
    assert got.vectors.dtype == np.float32 and got.vectors.flags.writeable
    np.testing.assert_array_equal(got.vectors, normalize(loaded.vectors, pipeline))
    assert fingerprint == loaded.fingerprint()


def test_float64_file_is_cast_like_load_vectors(tmp_path, space):
    path = tmp_path / "d.npy"
    save_vectors(path, WordVectors(space.words, space.vectors.astype(np.float64) / 3))
    loaded = load_vectors(path)  # float32 by default
    got, fingerprint = load_normalized(path, "unit,center,unit")
    assert got.vectors.dtype == np.float32
    np.testing.assert_array_equal(got.vectors, normalize(loaded.vectors))
    assert fingerprint == loaded.fingerprint()


def test_text_file_takes_the_same_route(tmp_path, space):
    small = space.subset(50)
    path = tmp_path / "t.vec"
    save_vectors(path, small)
    loaded = load_vectors(path)
    got, fingerprint = load_normalized(path, "unit,center,unit")
    np.testing.assert_array_equal(got.vectors, normalize(loaded.vectors))
    assert fingerprint == loaded.fingerprint() and got.words == loaded.words


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])  # 1e300 fits float64, becomes inf as float32
def test_bad_rows_are_reported_as_load_vectors_reports_them(tmp_path, space, bad):
    vectors = space.vectors.astype(np.float64)
    vectors[ROW_NORM_CHUNK + 2, 3] = bad  # in the second chunk: row numbers are the file's, not the chunk's
    path = tmp_path / "bad.npy"
    save_vectors(path, WordVectors(space.words, vectors))
    with pytest.raises(VectorFileError) as expected:
        load_vectors(path)
    with pytest.raises(VectorFileError) as got:
        load_normalized(path, "unit,center,unit")
    assert str(got.value) == str(expected.value)
    assert f"row {ROW_NORM_CHUNK + 2} " in str(got.value)


def test_missing_vocabulary_and_empty_file_errors(tmp_path, space):
    path = tmp_path / "lonely.npy"
    np.save(path, space.vectors[:3])
    with pytest.raises(VectorFileError, match="missing vocabulary"):
        load_normalized(path, "unit")
    with pytest.raises(VectorFileError, match="no such file"):
        load_normalized(tmp_path / "absent.npy", "unit")


def peak_traced_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npy_allocates_one_array_not_three(tmp_path):
    # numpy reports its data buffers to tracemalloc; pages read through the memory map are not allocations.
    rng = np.random.default_rng(5)
    rows = 12 * ROW_NORM_CHUNK
    wv = WordVectors([f"w{i}" for i in range(rows)], rng.standard_normal((rows, 32)).astype(np.float32))
    path = tmp_path / "big.npy"
    save_vectors(path, wv)
    array_bytes = wv.vectors.nbytes

    def old_route():
        loaded = load_vectors(path)
        loaded.fingerprint()
        normalize(loaded.vectors)

    old = peak_traced_bytes(old_route)
    new = peak_traced_bytes(lambda: load_normalized(path, "unit,center,unit"))
    vocabulary = peak_traced_bytes(lambda: load_vectors(path, max_vocab=1) and [f"w{i}" for i in range(rows)])
    # Both peaks hold the vocabulary's Python strings; beyond it the old route holds the loaded copy and the
    # normalised one, load_normalized only the normalised one and a chunk's temporaries.
    assert old - vocabulary >= 1.9 * array_bytes, (old, vocabulary, array_bytes)
    assert new - vocabulary < 1.4 * array_bytes, (new, vocabulary, array_bytes)
