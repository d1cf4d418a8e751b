"""Tiny planted-alignment worlds for the mapping-method tests (no /work/shared data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.alignment.vectors import WordVectors


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


@dataclass
class World:
    src: WordVectors
    tgt: WordVectors
    gold: np.ndarray  # (n, 2) source row -> target row
    Q: np.ndarray


def planted_world(n: int = 1000, d: int = 32, noise: float = 0.0, seed: int = 0, identical_fraction: float = 0.1,
                  nonlinear: float = 0.0) -> World:
    """Clustered unit source vectors; targets = rotated (optionally warped, noisy) sources in shuffled order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(4, n // 25), d))
    X = unit(centres[rng.integers(0, len(centres), n)] + 0.9 * rng.standard_normal((n, d)))
    Q = random_rotation(d, rng)
    Z = X @ Q
    if nonlinear:
        Z = Z + nonlinear * np.tanh(3.0 * Z[:, ::-1])  # a smooth non-linear warp
    Z = unit(Z + noise * rng.standard_normal((n, d)) / np.sqrt(d))
    perm = rng.permutation(n)
    Y = Z[perm]
    inv = np.argsort(perm)
    gold = np.stack([np.arange(n), inv], axis=1).astype(np.int64)
    src_words = [f"s{i}" for i in range(n)]
    tgt_words = [f"t{j}" for j in range(n)]
    n_ident = int(identical_fraction * n)
    for i in rng.choice(n, n_ident, replace=False):
        tgt_words[inv[i]] = src_words[i]
    return World(WordVectors(src_words, X), WordVectors(tgt_words, Y.astype(np.float32)), gold, Q)


def nn_accuracy(XS: np.ndarray, YT: np.ndarray, gold: np.ndarray) -> float:
    """P@1 by plain cosine NN of each gold source against all targets."""
    sims = unit(XS[gold[:, 0]]) @ unit(YT).T
    return float(np.mean(sims.argmax(axis=1) == gold[:, 1]))
