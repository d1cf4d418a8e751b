"""Residual text heads over a shared multilingual tower: the learnt correction's weight s (s = 0 is the encoder's own
space, exactly) and per-language residuals where a language without one passes through unchanged (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.globetrotter import (
    GlobetrotterConfig,
    GlobetrotterHeads,
    read_checkpoint,
    save_checkpoint,
    with_residual_scale,
)
from services.errors import InvalidInput
from services.sentences.training import GlobetrotterTrainConfig, train_globetrotter
from tests.services.sentences.test_training import _shared_tower_planted


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _train(**extra):
    img, feats, owner, lang_of, rows, test = _shared_tower_planted(seed=5)
    config = GlobetrotterTrainConfig(epochs=4, batch_size=100, lr=1e-2, patience=4, preserve=0.0, **extra)
    heads, history, best = train_globetrotter(img, feats, owner, lang_of, rows, ["en", "de"], {"en": "*", "de": "*"},
                                              np.arange(50, len(img)), np.arange(50), config)
    assert best["epoch"] >= 1  # trained: the residuals are not zero
    return heads, {lang: torch.as_tensor(f) for lang, f in test.items()}


@pytest.mark.parametrize("extra", [{}, {"language_heads": True}, {"language_heads": True, "shared_residual": False}])
def test_zero_residual_weight_is_the_raw_encoder_exactly(extra):
    heads, test = _train(**extra)
    raw = with_residual_scale(heads, 0.0)
    with torch.no_grad():
        for lang, x in test.items():
            for key in {"*", *heads.config.text_dims}:
                assert torch.equal(raw.embed_texts(x, key), _unit(x))  # bit for bit, every head
    with torch.no_grad():  # while the trained heads moved the training languages
        for lang in ("en", "de"):
            key = lang if lang in heads.config.text_dims else "*"
            assert not torch.allclose(heads.embed_texts(test[lang], key), _unit(test[lang]), atol=1e-3)


def test_residual_weight_interpolates_the_correction():
    heads, test = _train()
    x = test["en"]
    with torch.no_grad():
        r = heads.residual(x, "*")
        assert r.abs().max() > 1e-3
        for s in (0.25, 0.5):
            assert torch.allclose(with_residual_scale(heads, s).embed_texts(x, "*"), _unit(x + s * r), atol=1e-6)
        assert torch.allclose(with_residual_scale(heads, 1.0).embed_texts(x, "*"), heads.embed_texts(x, "*"))


def test_training_config_weighs_the_trained_residual():
    """config.residual_scale: trained at full weight, served at s (the same training, the residual scaled)."""
    full, test = _train()
    half, _ = _train(residual_scale=0.5)
    none, _ = _train(residual_scale=0.0)
    assert full.config.residual_scale == 1.0 and half.config.residual_scale == 0.5
    with torch.no_grad():
        x = test["es"]
        assert torch.allclose(half.embed_texts(x, "*"), _unit(x + 0.5 * full.residual(x, "*")), atol=1e-5)
        assert torch.equal(none.embed_texts(x, "*"), _unit(x))


def test_unseen_language_passes_through_per_language_residuals():
    """Per-language residuals only: en and de (captioned in training) move, es (never seen) is the encoder's own
    space -- also at full weight; the unused shared residual stays exactly zero."""
    heads, test = _train(language_heads=True, shared_residual=False)
    assert heads.stacked and not heads.config.shared_residual
    assert all(float(p.detach().abs().max()) == 0.0 for p in heads.text["any"].parameters())
    with torch.no_grad():
        assert torch.equal(heads.embed_texts(test["es"], "*"), _unit(test["es"]))
        for lang in ("en", "de"):
            assert not torch.allclose(heads.embed_texts(test[lang], lang), _unit(test[lang]), atol=1e-3)
            assert torch.allclose(heads.embed_texts(test[lang], lang),
                                  _unit(test[lang] + heads.text[f"l_{lang}"].linear(test[lang])), atol=1e-6)
    stacked, _ = _train(language_heads=True)  # with the shared residual, es gets the shared correction
    with torch.no_grad():
        assert not torch.allclose(stacked.embed_texts(test["es"], "*"), _unit(test["es"]), atol=1e-3)


def test_checkpoint_keeps_the_weight_and_old_checkpoints_read_as_trained(tmp_path):
    heads, test = _train(language_heads=True, shared_residual=False, residual_scale=0.25)
    path = save_checkpoint(tmp_path / "g.pt", heads, image_tower="mobilenet-v1",
                           text_towers={k: "use-multilingual" for k in heads.config.text_dims})
    back = read_checkpoint(path).heads
    assert back.config.residual_scale == 0.25 and back.config.shared_residual is False
    with torch.no_grad():
        for key in heads.config.text_dims:
            assert torch.equal(back.embed_texts(test["de"], key), heads.embed_texts(test["de"], key))
    blob = torch.load(path, weights_only=True)  # a checkpoint written before the two fields existed
    for k in ("residual_scale", "shared_residual"):
        blob["config"].pop(k)
    torch.save(blob, tmp_path / "old.pt")
    old = read_checkpoint(tmp_path / "old.pt").heads
    assert old.config.residual_scale == 1.0 and old.config.shared_residual is True


def test_residual_options_are_checked():
    assert GlobetrotterTrainConfig.from_dict({"residual_scale": 0}).residual_scale == 0
    for bad in ({"residual_scale": -0.1}, {"residual_scale": 1.5}, {"residual_scale": "x"},
                {"shared_residual": 1}):
        with pytest.raises(InvalidInput):
            GlobetrotterTrainConfig.from_dict(bad)
    with pytest.raises(InvalidInput):
        GlobetrotterHeads(GlobetrotterConfig(image_dim=4, text_dims={"*": 8}, embed_dim=8, text_head="residual",
                                             residual_scale=2.0))
