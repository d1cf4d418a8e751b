"""Test-only aligners for job tests, loaded into workers with VISLEX_WORKER_IMPORTS.

``test_procrustes``: orthogonal Procrustes on the seed pairs, repeated ``n_iter`` times with
``sleep_s`` between iterations (so cancel, SIGKILL and time-limit tests have a job that runs
as long as they need), calling the progress function at every iteration boundary as
``registry.align`` does. Uses ``services.alignment.mapping.Mapping`` when it exists,
otherwise a minimal stand-in with the same save/load/transform contract.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from services.jobs.methods import EXTRA_ALIGNERS


@dataclass
class StandInMapping:
    W: np.ndarray
    method: str = "test_procrustes"
    src_fingerprint: str = ""
    tgt_fingerprint: str = ""
    params: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return hashlib.sha256(self.W.astype(np.float32).tobytes()).hexdigest()[:16]

    def transform_source(self, X):
        return X @ self.W

    def transform_target(self, Y):
        return Y

    def save(self, path) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz")
        os.close(fd)
        np.savez(tmp, W=self.W, vislex_mapping_format=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "StandInMapping":
        with np.load(path) as z:
            return cls(W=z["W"])


def _make_mapping(W, src, tgt, stats):
    try:
        from services.alignment.mapping import LinearStage, Mapping  # type: ignore

        return Mapping(method="test_procrustes", params={}, src_fingerprint=src.fingerprint(),
                       tgt_fingerprint=tgt.fingerprint(), stats=stats, stages=[LinearStage(W)])
    except Exception:
        return StandInMapping(W=W, src_fingerprint=src.fingerprint(), tgt_fingerprint=tgt.fingerprint(), stats=stats)


def test_procrustes(src, tgt, method, *, seed_pairs, options=None, progress=None):
    options = options or {}
    n_iter = int(options.get("n_iter", 3))
    sleep_s = float(options.get("sleep_s", 0.0))
    start = time.perf_counter()
    pairs = np.asarray(seed_pairs, dtype=np.int64).reshape(-1, 2)
    X, Y = src.vectors[pairs[:, 0]], tgt.vectors[pairs[:, 1]]
    losses = []
    W = np.eye(src.dim, dtype=np.float32)
    for it in range(1, n_iter + 1):
        U, _, Vt = np.linalg.svd(X.T @ Y)
        W = (U @ Vt).astype(np.float32)
        loss = float(np.mean(np.sum((X @ W - Y) ** 2, axis=1))) + 1.0 / it  # decreasing, like a real run
        losses.append(loss)
        if sleep_s:
            time.sleep(sleep_s)
        if progress is not None:
            progress("procrustes", it, n_iter, {"validation_loss": loss})
    mapped = src.vectors @ W
    sims = mapped @ tgt.vectors.T
    best = sims.argmax(axis=1)
    dictionary = (np.stack([np.arange(len(best)), best], axis=1).astype(np.int64), sims.max(axis=1))
    mapping = _make_mapping(W, src, tgt, {"pairs_used": int(len(pairs))})
    return SimpleNamespace(mapping=mapping, dictionary=dictionary, validation_losses=losses,
                           seconds=time.perf_counter() - start, pairs_used=int(len(pairs)))


EXTRA_ALIGNERS["test_procrustes"] = test_procrustes
