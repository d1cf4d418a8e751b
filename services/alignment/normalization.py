"""Normalisation of word-vector spaces: ``unit`` and ``center`` steps in a pipeline such as ``unit,center,unit``
(VecMap's and MUSE's preprocessing), computed in row chunks with bounded temporaries.

Split out of :mod:`services.alignment.vectors` (file formats); the names stay importable from there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from services.errors import InvalidInput

__all__ = ["NORMALIZATION_STEPS", "ROW_NORM_CHUNK", "normalize", "parse_pipeline", "row_norms"]

NORMALIZATION_STEPS = ("unit", "center")


def parse_pipeline(pipeline: str | None) -> list[str]:
    """``"unit,center,unit"`` -> ``["unit", "center", "unit"]``; ``""``/``"none"`` -> ``[]``."""
    if pipeline is None:
        return []
    steps = [s.strip().lower() for s in pipeline.split(",") if s.strip()]
    if steps == ["none"]:
        return []
    unknown = [s for s in steps if s not in NORMALIZATION_STEPS]
    if unknown:
        raise InvalidInput(
            f"unknown normalisation step(s) {unknown}; known: {', '.join(NORMALIZATION_STEPS)} (or 'none')",
            detail={"unknown": unknown, "known": list(NORMALIZATION_STEPS)},
        )
    return steps


ROW_NORM_CHUNK = 8192


def row_norms(a: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(a, axis=1, keepdims=True)``, the same numbers (each row's sum is computed alike), in row
    chunks: no temporary the size of ``a`` (a 200k x 300 float32 space: 240 MB of fresh pages per call, which a
    new process pays for in page faults; issue 18's load and retrieval stages grew 10x for 4x the rows)."""
    a = np.asarray(a)
    if len(a) <= ROW_NORM_CHUNK:
        return np.linalg.norm(a, axis=1, keepdims=True)
    return np.concatenate([np.linalg.norm(a[s : s + ROW_NORM_CHUNK], axis=1, keepdims=True)
                           for s in range(0, len(a), ROW_NORM_CHUNK)])


def normalize(X: np.ndarray, pipeline: str = "unit,center,unit", *, dtype=None,
              observe: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Apply comma-separated steps: ``unit`` (rows to unit length), ``center`` (subtract column mean).

    Returns a new float32 array (float64 stays float64); zero rows stay zero.

    Computed in row chunks with as few passes over the array as the steps allow: row-local steps are carried
    to the next pass, and a ``center`` needs only the column sums of the rows as they are after the steps
    before it, which the pass that writes them accumulates. ``unit,center,unit`` is two passes (read X, write
    the unit rows and sum them; then centre and normalise each chunk while it is in cache) instead of six
    whole-array ones, and no temporary the size of X (issue 18: at 200k x 300 each such pass is 240 MB of
    memory traffic, and fresh temporaries cost page faults; the 200k .npy load measured 0.3-0.8 s). The
    numbers are the whole-array steps' own: the same row norms, the column means accumulated in float64.

    ``X`` may be a read-only memory map: only the first pass reads it. ``dtype`` sets the output (and working)
    dtype, e.g. float32 for a float64 file, as if X had been cast first. ``observe(start, rows)`` sees every
    row of X once, in order, as the first pass reads it (cast to the output dtype, before any step): a loader
    checks and fingerprints the file's rows in the pass that normalises them
    (:func:`services.alignment.vectors.load_normalized`).
    """
    steps = parse_pipeline(pipeline)
    X = np.asarray(X)
    out_dtype = np.dtype(dtype) if dtype is not None else np.result_type(X.dtype, np.float32)
    Y = np.empty(X.shape, dtype=out_dtype)
    if X.ndim != 2 or len(X) == 0:  # nothing to chunk
        Y[...] = X
        if observe is not None:
            observe(0, Y)
        return Y if len(X) == 0 else _normalize_whole(Y, steps)
    source = X  # the rows the next pass reads: X, then Y itself (in place)
    pending: list = []  # row-local steps not applied yet: "unit", or a mean vector to subtract
    for step in steps + [None]:
        if step == "unit":
            pending.append("unit")
            continue
        want_sum = step == "center"
        total = np.zeros(X.shape[1], dtype=np.float64) if want_sum else None
        for start in range(0, len(X), ROW_NORM_CHUNK):
            chunk = np.array(source[start : start + ROW_NORM_CHUNK], dtype=out_dtype)
            if observe is not None and source is X:
                observe(start, chunk)
            for op in pending:
                if isinstance(op, str):
                    norms = np.linalg.norm(chunk, axis=1, keepdims=True)
                    norms[norms == 0] = 1
                    chunk /= norms
                else:
                    chunk -= op
            Y[start : start + len(chunk)] = chunk
            if want_sum:
                total += chunk.sum(axis=0, dtype=np.float64)
        source, pending = Y, []
        if want_sum:
            # float64 sums then one division, as ``mean(axis=0, dtype=float64)``: float32 sums over 10^5 rows lose digits
            pending.append((total / len(X)).astype(out_dtype))
    return Y


def _normalize_whole(Y: np.ndarray, steps: list[str]) -> np.ndarray:
    """The steps on the whole array at once, in place (arrays that are not 2-d)."""
    for step in steps:
        if step == "unit":
            norms = row_norms(Y)
            norms[norms == 0] = 1
            Y /= norms
        else:
            Y -= Y.mean(axis=0, dtype=np.float64).astype(Y.dtype)
    return Y
