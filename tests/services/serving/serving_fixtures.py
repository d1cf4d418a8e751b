"""Helpers shared by the serving tests (imported by name: tests are not a package)."""

from __future__ import annotations

import numpy as np


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


class LinearMapping:
    """Minimal duck-typed mapping (transform_source/transform_target/version)."""

    def __init__(self, W: np.ndarray, version: str, method: str = "procrustes"):
        self.W, self.version, self.method = W.astype(np.float32), version, method

    def transform_source(self, X):
        return np.asarray(X, np.float32) @ self.W

    def transform_target(self, Y):
        return np.asarray(Y, np.float32)


class ShiftTargetsMapping(LinearMapping):
    """Moves targets too (like InstaMap): the pair needs its own index."""

    def __init__(self, W, version, shift):
        super().__init__(W, version, "instamap")
        self.shift = shift.astype(np.float32)

    def transform_source(self, X):
        return super().transform_source(X) + self.shift

    def transform_target(self, Y):
        return np.asarray(Y, np.float32) + self.shift
