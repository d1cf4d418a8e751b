"""Tiny planted spaces for the serving tests (no /work/shared data needed)."""

from __future__ import annotations

import numpy as np
import pytest

from services.serving.registry import SpaceRegistry
from services.serving.space import WordSpace

from tests.services.serving.serving_fixtures import LinearMapping, unit


@pytest.fixture(scope="session")
def planted():
    """en (200×12) and fr = en @ R + noise, word i <-> word i; R a random rotation."""
    rng = np.random.default_rng(3)
    n, d = 200, 12
    en = unit(rng.standard_normal((n, d)))
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    fr = unit(en @ R + 0.02 * rng.standard_normal((n, d)))
    en_words = [f"w{i}" for i in range(n)]
    fr_words = [f"m{i}" for i in range(n)]
    return en, fr, R.astype(np.float32), en_words, fr_words


@pytest.fixture()
def registry(planted):
    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=5)
    reg.add_space(WordSpace.build("en", en_words, en, source="test", fingerprint="en0"))
    reg.add_space(WordSpace.build("fr", fr_words, fr, source="test", fingerprint="fr0"))
    reg.install_mapping("en", "fr", LinearMapping(R, "v1"))
    return reg
