"""services/alignment/normalization.py: unit / center pipelines, computed in row chunks."""

import numpy as np
import pytest

from services.alignment.normalization import normalize
from services.errors import InvalidInput


def _normalize_whole_array(X, steps):
    """The whole-array steps normalize() computed before it worked in row chunks (the reference)."""
    Y = np.array(X, dtype=np.result_type(X.dtype, np.float32), copy=True)
    for step in steps:
        if step == "unit":
            norms = np.linalg.norm(Y, axis=1, keepdims=True)
            norms[norms == 0] = 1
            Y /= norms
        else:
            Y -= Y.mean(axis=0, dtype=np.float64).astype(Y.dtype)
    return Y


@pytest.mark.parametrize("pipeline", ["unit,center,unit", "center", "center,unit", "unit", "unit,center", ""])
def test_chunked_normalize_equals_the_whole_array_steps(pipeline):
    """Several row chunks (ROW_NORM_CHUNK rows each), a zero row, an offset mean: the chunked passes give the
    whole-array steps' numbers (same row norms; column means summed in float64)."""
    from services.alignment.normalization import ROW_NORM_CHUNK, parse_pipeline

    rng = np.random.default_rng(7)
    n = 2 * ROW_NORM_CHUNK + 123
    X = (rng.standard_normal((n, 6)) * rng.uniform(0.5, 3, (n, 1)) + 1.5).astype(np.float32)
    X[5] = 0
    got = normalize(X, pipeline)
    want = _normalize_whole_array(X, parse_pipeline(pipeline))
    assert got.dtype == np.float32 and got.shape == X.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    assert np.all(got[5] == want[5])


def test_normalize_pipelines():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((50, 4)) * 3 + 2).astype(np.float32)
    unit = normalize(X, "unit")
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-6)
    centered = normalize(X, "center")
    np.testing.assert_allclose(centered.mean(axis=0), 0, atol=1e-5)
    full = normalize(X, "unit,center,unit")
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1, rtol=1e-6)
    expected = unit - unit.mean(axis=0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(normalize(X, ""), X)
    np.testing.assert_array_equal(normalize(X, "none"), X)
    assert normalize(X, "unit") is not X and X[0, 0] != unit[0, 0]  # input untouched
    assert normalize(X.astype(np.float16), "unit").dtype == np.float32
    zero = np.zeros((2, 3), dtype=np.float32)
    assert np.isfinite(normalize(zero, "unit,center,unit")).all()
    with pytest.raises(InvalidInput, match="unknown normalisation"):
        normalize(X, "unit,whiten")


def test_row_norms_in_chunks_are_numpys_norms_bit_for_bit():
    from services.alignment.normalization import ROW_NORM_CHUNK, row_norms

    rng = np.random.default_rng(5)
    a = (rng.standard_normal((2 * ROW_NORM_CHUNK + 17, 300)) * rng.uniform(0.1, 9, (1, 300))).astype(np.float32)
    a[3] = 0
    assert np.array_equal(row_norms(a), np.linalg.norm(a, axis=1, keepdims=True))
    assert row_norms(a[:0]).shape == (0, 1)
    # normalize: the numbers of the unchunked pipeline
    ref = a.copy()
    for step in ("unit", "center", "unit"):
        if step == "unit":
            n = np.linalg.norm(ref, axis=1, keepdims=True)
            n[n == 0] = 1
            ref /= n
        else:
            ref -= ref.mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(normalize(a, "unit,center,unit"), ref)
