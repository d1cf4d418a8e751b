"""uCLIP heads as WALIP's text tower for a language without its own CLIP (methods.md, uCLIP + WALIP step 1).

Tiny open_clip architecture with random weights (saved as a local checkpoint, loaded through
the ClipPool like a real one), a hashing stand-in for the multilingual encoder, random heads.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from models.clip import ClipPool, ClipSpec, TowerSpec, embed_words
from models.uclip import (
    HeadsConfig,
    UclipHeads,
    UclipImageEncoder,
    UclipTextTower,
    save_heads,
)
from services.errors import InvalidInput, Unavailable
from services.retrieval.testing import HashingTextEncoder
from tests.conftest import random_clip_checkpoint, write_random_pngs

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
EN = ["dog", "cat", "car", "tree", "house", "boat", "bird", "horse"]
FR = ["chien", "chat", "voiture", "arbre", "maison", "bateau", "oiseau", "cheval"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return random_clip_checkpoint("vislex-tiny-tower", TINY, tmp_path_factory.mktemp("clip") / "tiny.pt")


@pytest.fixture(scope="module")
def heads_path(tmp_path_factory):
    torch.manual_seed(1)
    # out_dim = the CLIP embedding dimension (as with the defaults: 512 for ViT-B-32)
    heads = UclipHeads(HeadsConfig(clip_dim=32, text_dim=24, hidden_dim=16, out_dim=32))
    return save_heads(heads, tmp_path_factory.mktemp("heads") / "heads.pt", meta={"text_encoder": "hashing-24"})


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return write_random_pngs(tmp_path_factory.mktemp("images"), 6)


@pytest.fixture()
def pool(tiny_checkpoint, heads_path, monkeypatch):
    from models import text_encoders

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: HashingTextEncoder(dim=24))
    spec = ClipSpec(model="vislex-tiny-tower", checkpoint=str(tiny_checkpoint), model_config=TINY, device="cpu",
                    languages=("en",), name="tiny-en")
    return ClipPool(specs=[spec], towers={"fr": {"tower": "uclip", "heads": str(heads_path), "base": "en"}})


def test_configured_uclip_tower_embeds_in_the_shared_space(pool, image_dir):
    fr = pool.for_language("fr")
    en = pool.for_language("en")
    assert isinstance(fr.text, UclipTextTower) and fr.reused_from == "en"
    assert isinstance(fr.image, UclipImageEncoder) and fr.image.clip is en.image
    assert fr.image.identity != en.image.identity  # image-set caches of raw CLIP and f_C never mix
    emb = fr.text.encode_text(["un chien", "une photo d'un chat"])
    assert emb.shape == (2, en.image.embed_dim) == (2, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # f_M over the multilingual embedding, exactly
    raw = HashingTextEncoder(dim=24).encode(["un chien"])
    np.testing.assert_allclose(emb[:1], fr.text.heads.project_text(raw), atol=1e-6)
    words = embed_words(fr.text, FR[:3], "fr")
    assert words.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1.0, atol=1e-5)
    images = fr.image.encode_images(sorted(image_dir.iterdir()))
    assert images.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    # images through CLIP + f_C
    np.testing.assert_allclose(images, fr.text.heads.project_clip(en.image.encode_images(sorted(image_dir.iterdir()))),
                               atol=1e-5)
    assert pool.status()["tower:fr"]["available"] is True


def test_fingerprints_through_the_uclip_tower(pool, image_dir, tmp_path):
    from services.vision.images import embed_image_folder
    from services.vision.walip_pipeline import (
        FingerprintOptions,
        compute_pivots,
        language_fingerprints,
    )

    fr = pool.for_language("fr")
    images = embed_image_folder(fr.image, image_dir, cache_dir=tmp_path)
    fp = language_fingerprints(fr, FR, "fr", images, FingerprintOptions())
    assert fp.shape == (len(FR), 6) and np.isfinite(fp).all()
    assert np.abs(fp).max() <= 1.0 + 1e-5  # cosines of unit rows
    report = compute_pivots(EN, FR, src_enc=pool.for_language("en"), tgt_enc=fr, images_dir=str(image_dir),
                            src_lang="en", tgt_lang="fr", cache_dir=str(tmp_path))
    assert report.n_images == {"en": 6, "fr": 6}
    assert report.pivots.pairs.ndim == 2 and report.pivots.pairs.shape[1] == 2


def test_tower_failures_are_unavailable_with_reasons(tiny_checkpoint, heads_path, tmp_path, monkeypatch):
    from models import text_encoders

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: HashingTextEncoder(dim=24))
    spec = ClipSpec(model="vislex-tiny-tower", checkpoint=str(tiny_checkpoint), model_config=TINY, device="cpu",
                    languages=("en",), name="tiny-en")
    pool = ClipPool(specs=[spec], towers={
        "ru": TowerSpec(heads=str(tmp_path / "missing.pt")),       # no checkpoint
        "it": {"kind": "uclip", "heads": str(heads_path)},           # hashing encoder: en/fr/de/es only
    })
    status = pool.load_all()
    assert status["tower:ru"]["available"] is False and "no uCLIP heads checkpoint" in status["tower:ru"]["reason"]
    assert status["tower:it"]["available"] is False and "does not support 'it'" in status["tower:it"]["reason"]
    with pytest.raises(Unavailable, match="no uCLIP heads checkpoint"):
        pool.for_language("ru")
    with pytest.raises(InvalidInput, match="unknown text-tower kind"):
        TowerSpec.from_dict({"kind": "mclip"})
    # a text encoder of the wrong width is refused when the tower is built
    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: HashingTextEncoder(dim=10, name="hashing-24"))
    bad = ClipPool(specs=[spec], towers={"fr": {"heads": str(heads_path)}})
    with pytest.raises(Unavailable, match="24-d text embeddings"):
        bad.for_language("fr")


def _tower_settings(tiny_checkpoint, heads_path, tmp_path):
    from app.settings import Settings

    return Settings(data_dir=tmp_path / "data", clip_device="cpu", encoder_languages=["en", "fr"], clip_models={
        "en": {"model": "vislex-tiny-tower", "checkpoint": str(tiny_checkpoint), "model_config": TINY},
        "fr": {"tower": "uclip", "heads": str(heads_path), "base": "en"},
    })


def test_tower_selected_from_settings_in_jobs_and_in_the_app(tiny_checkpoint, heads_path, tmp_path, monkeypatch):
    """A ``clip_models`` tower entry reaches both pools: the worker's (jobs, CLI) and the app's (/v1/fingerprints)."""
    from app.wiring.vision import build_vision
    from models import text_encoders
    from services.vision.config import pool_from_settings

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: HashingTextEncoder(dim=24))
    settings = _tower_settings(tiny_checkpoint, heads_path, tmp_path)
    for pool in (pool_from_settings(settings, ["en", "fr"]), build_vision(settings).pool):
        fr = pool.for_language("fr")
        assert isinstance(fr.text, UclipTextTower) and fr.reused_from == "en"
        assert fr.text.encode_text(["un chien"]).shape == (1, 32)


def test_app_vision_service_uses_the_configured_templates(tmp_path):
    from app.settings import Settings
    from app.wiring.vision import build_vision
    from models.clip import default_prompts

    settings = Settings(data_dir=tmp_path / "data", clip_templates={"fr": ["une image de {}."]})
    templates = build_vision(settings).templates
    assert templates["fr"] == ["une image de {}."] and templates["en"] == default_prompts()["en"]
    assert build_vision(Settings(data_dir=tmp_path / "data")).templates is None  # shipped prompts
