"""Globetrotter training on planted data: cross-lingual retrieval far above an untrained model and chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.globetrotter import project
from services.sentences.evaluation import globetrotter_metric, p_at_1
from services.sentences.training import GlobetrotterTrainConfig, batch_loss, train_globetrotter
from tests.services.sentences.planted import planted


def _cross(heads, test, keys):
    emb = {lang: project(lambda x, k=keys[lang]: heads.embed_texts(x, k), f) for lang, f in test.items()}
    return p_at_1(emb["en"], emb["de"])[0], globetrotter_metric(list(emb.values()))[0]


def test_training_aligns_languages_that_only_photos_connect():
    img, feats, owner, lang_of, rows, langs, test, dev = planted()
    keys = {lang: lang for lang in langs}  # one tower (and head) per language
    train = np.arange(len(img))
    config = GlobetrotterTrainConfig(embed_dim=16, epochs=15, batch_size=100, lr=1e-2, patience=15)
    untrained = GlobetrotterTrainConfig(embed_dim=16, epochs=1, batch_size=100, lr=1e-9, patience=1)
    heads0, _, _ = train_globetrotter(img, feats, owner, lang_of, rows, langs, keys, train, np.array([], int),
                                      untrained, dev=dev)
    heads, history, best = train_globetrotter(img, feats, owner, lang_of, rows, langs, keys, train,
                                              np.array([], int), config, dev=dev)
    p0, m0 = _cross(heads0, test, keys)
    p1, m1 = _cross(heads, test, keys)
    assert p0 < 10 and m0 < 15  # chance: 1 %
    assert p1 > 60 and m1 > 60 and p1 > p0 + 50
    assert best["epoch"] >= 1 and best["dev_p@1"] == max(h["dev_p@1"] for h in history)
    assert any("alpha_pos" in h for h in history)


def test_residual_heads_start_from_the_tower_space():
    """A shared tower with residual heads: epoch 0 is the tower itself, and the best kept is never worse on dev."""
    img, feats, owner, lang_of, rows, langs, test, dev = planted(seed=1)
    shared = {lang: "*" for lang in langs}
    same = {lang: feats["en"] for lang in langs}  # a 'multilingual' tower: both languages in one space
    config = GlobetrotterTrainConfig(epochs=3, batch_size=100, patience=3)
    heads, history, best = train_globetrotter(img, same, owner, lang_of, rows, langs, shared, np.arange(len(img)),
                                              np.array([], int), config, dev={"en": dev["en"], "de": dev["en"]})
    assert heads.config.text_head == "residual" and history[0]["epoch"] == 0
    assert best["score"] >= history[0]["score"]


def test_ablation_drops_the_text_term():
    import torch

    img, feats, *_ = planted(seed=2)
    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads

    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=img.shape[1], text_dims={"en": 20}, embed_dim=8))
    x = torch.as_tensor(img[:50])
    z = heads.embed_texts(torch.as_tensor(feats["en"][:50]), "en")
    _, full = batch_loss(heads, x, z, GlobetrotterTrainConfig(margin=0.0), torch.Generator().manual_seed(0))
    _, ablated = batch_loss(heads, x, z, GlobetrotterTrainConfig(transitive=False), torch.Generator().manual_seed(0))
    assert "t" in full and full["alpha_pos"] > 0 and "t" not in ablated
    assert full["vv"] == pytest.approx(ablated["vv"])


def test_language_heads_over_a_shared_tower():
    """Per-language residual heads stacked on a shared one: a language moves on its own; others use the shared."""
    from models.globetrotter import tower_key

    img, feats, owner, lang_of, rows, langs, test, dev = planted(seed=3)
    same = {lang: feats["en"] for lang in langs}
    config = GlobetrotterTrainConfig(epochs=2, batch_size=100, patience=2, language_heads=True)
    heads, history, best = train_globetrotter(img, same, owner, lang_of, rows, langs, {lang: "*" for lang in langs},
                                              np.arange(50, len(img)), np.arange(50), config)  # image-text val
    assert best["epoch"] >= 1 and "val_mean_recall" in best
    assert heads.stacked and sorted(heads.config.text_dims) == ["*", "de", "en"]
    assert tower_key(heads.config, "de") == "de" and tower_key(heads.config, "es") == "*"
    x = torch.as_tensor(feats["en"][:5])
    with torch.no_grad():  # a language's embedding = x + its residual + the shared residual
        expected = torch.nn.functional.normalize(heads.text["l_de"](x) + heads.text["any"].linear(x), dim=-1)
        assert torch.allclose(heads.embed_texts(x, "de"), expected, atol=1e-6)
        assert not torch.allclose(heads.embed_texts(x, "de"), heads.embed_texts(x, "*"))
