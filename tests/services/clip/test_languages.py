"""Per-language maps after centring, and one caption per language per photo: the arithmetic on tiny cases,
and training with them on a planted set whose second language is a rotated copy of the first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.compact_clip import ClipHeads, HeadConfig, TextCentres, multi_positive_loss
from services.clip.languages import (coral_map, fit_language_maps, one_caption_per_language, pivot_language,
                                     ridge_map)
from services.clip.training import ClipTrainConfig, _all_captions_loss, _caption_table, train_heads
from services.errors import InvalidInput


def _orthogonal(dim, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


def test_coral_map_gives_the_pivot_covariance():
    rng = np.random.default_rng(0)
    x_l = rng.normal(size=(4000, 5)) * np.array([3.0, 1.0, 0.5, 0.2, 2.0])
    x_p = rng.normal(size=(4000, 5)) @ rng.normal(size=(5, 5))
    a = coral_map(x_l, x_p, shrink=0.0)
    assert np.allclose(np.cov((x_l @ a).T), np.cov(x_p.T), atol=1e-6)
    # shrinking pulls both covariances towards their mean eigenvalue: identical shrunk spreads give the identity
    assert np.allclose(coral_map(x_p, x_p, shrink=0.3), np.eye(5), atol=1e-8)


def test_ridge_map_recovers_a_planted_map_and_shrinks_to_the_identity():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6))
    true = rng.normal(size=(6, 6))
    assert np.allclose(ridge_map(x, x @ true, lam=1e-9), true, atol=1e-6)
    assert np.allclose(ridge_map(x, x @ true, lam=1e9), np.eye(6), atol=1e-4)
    default = ridge_map(x, x @ true)  # lam = mean eigenvalue of x'x: halfway-ish, strictly between the two
    assert 0.05 < np.abs(default - true).max() and 0.05 < np.abs(default - np.eye(6)).max()


def test_fit_language_maps_undoes_a_rotated_language():
    rng = np.random.default_rng(2)
    n, dim = 3000, 8
    content = rng.normal(size=(n, dim))
    q = _orthogonal(dim, 3)
    en = np.concatenate([content + 0.05 * rng.normal(size=(n, dim)) for _ in range(3)])
    de = content @ q + 0.05 * rng.normal(size=(n, dim))
    feats = np.concatenate([en, de]).astype(np.float32)
    owner = np.concatenate([np.tile(np.arange(n), 3), np.arange(n)])
    langs = np.asarray(["en"] * len(en) + ["de"] * n, dtype=object)
    assert pivot_language(langs) == "en"
    maps = fit_language_maps(feats, owner, langs, "map")
    assert set(maps) == {"de"}
    # the map sends a German row towards its photo's English rows (part of the way: shrunk towards the identity,
    # with a shrinkage of the mean eigenvalue -- on isotropic rows like these, about halfway)
    mapped = de @ maps["de"]
    cos = np.sum(mapped * content, 1) / np.linalg.norm(mapped, axis=1) / np.linalg.norm(content, axis=1)
    raw = np.sum(de * content, 1) / np.linalg.norm(de, axis=1) / np.linalg.norm(content, axis=1)
    assert raw.mean() < 0.2 and cos.mean() > raw.mean() + 0.3
    coral = fit_language_maps(feats, owner, langs, "coral")["de"]
    assert np.allclose(np.cov((de @ coral).T), np.cov(en.T), atol=0.1)
    # too few rows of a language (fewer than dimensions): no map
    assert fit_language_maps(feats[:len(en) + 5], owner[:len(en) + 5], langs[:len(en) + 5], "map") == {}
    with pytest.raises(ValueError):
        fit_language_maps(feats, owner, langs, "whiten")


def test_text_centres_apply_a_language_map_after_the_mean():
    means = {"en": np.array([1.0, 0.0], np.float32), "de": np.array([0.0, 2.0], np.float32)}
    swap = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    centres = TextCentres(means, {"de": swap})
    rows = np.array([[3.0, 5.0], [3.0, 5.0]], np.float32)
    assert np.allclose(centres.apply(rows, ["en", "de"]), [[2.0, 5.0], [3.0, 3.0]])
    restored = TextCentres.from_state(centres.state(), centres.maps_state())
    assert np.allclose(restored.apply(rows, "de"), centres.apply(rows, "de"))
    with pytest.raises(InvalidInput):
        TextCentres(means, {"fr": swap})
    with pytest.raises(InvalidInput):
        TextCentres(means, {"de": np.eye(3)})


def test_one_caption_per_language_keeps_one_of_each_group():
    owner = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    codes = np.array([1, 1, 1, 0, 2, 1, 0, 1])  # photo 0: three captions in language 1, one in 0 and one in 2
    seen = set()
    for seed in range(20):
        keep = one_caption_per_language(owner, codes, np.random.default_rng(seed))
        assert len(keep) == 6 and list(keep[3:]) == [5, 6, 7]
        assert set(keep[:3].tolist()) - {0, 1, 2} == {3, 4} and len(set(keep[:3].tolist()) & {0, 1, 2}) == 1
        seen.add(int([k for k in keep if k < 3][0]))
    assert seen == {0, 1, 2}  # every one of the three language-1 captions gets drawn


def test_per_language_sampling_changes_the_loss_as_computed_by_hand():
    torch.manual_seed(0)
    heads = ClipHeads(HeadConfig(kind="linear", image_dim=4, text_dim=3, embed_dim=5))
    X_img, X_txt = torch.randn(2, 4), torch.randn(5, 3)
    caption_owner = np.array([0, 0, 0, 0, 1])  # photo 0: captions 0-2 English, 3 German; photo 1: caption 4 English
    codes = np.array([0, 0, 0, 1, 0])
    order, start, count = _caption_table(caption_owner, 2)
    photos = np.array([0, 1])
    with torch.no_grad():
        every = _all_captions_loss(heads, X_img, X_txt, photos, order, start, count, "cpu")
        rng = np.random.default_rng(5)
        drawn = one_caption_per_language(caption_owner, codes, np.random.default_rng(5))
        sampled = _all_captions_loss(heads, X_img, X_txt, photos, order, start, count, "cpu", None,
                                     lambda o, caps: one_caption_per_language(o, codes[caps], rng))
        img, txt = heads.embed_images(X_img), heads.embed_texts(X_txt[torch.as_tensor(drawn)])
        by_hand = multi_positive_loss(img, txt, torch.as_tensor(caption_owner[drawn]), heads.logit_scale)
        full = multi_positive_loss(img, heads.embed_texts(X_txt), torch.as_tensor(caption_owner), heads.logit_scale)
    assert len(drawn) == 3 and torch.isclose(sampled, by_hand) and torch.isclose(every, full)
    assert not torch.isclose(sampled, every)


def _rotated_languages(n_images=240, dim=24, seed=0):
    """Photos of 24 hidden classes; 3 English captions and 1 German caption each, German rows a rotated copy."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 24, n_images)
    A, B = rng.normal(size=(24, dim)), rng.normal(size=(24, dim))
    img = A[classes] + 0.3 * rng.normal(size=(n_images, dim))
    owner = np.repeat(np.arange(n_images), 4)
    langs = np.asarray(["en", "en", "en", "de"] * n_images, dtype=object)
    txt = B[classes[owner]] + 0.3 * rng.normal(size=(len(owner), dim))
    de = langs == "de"
    txt[de] = txt[de] @ _orthogonal(dim, seed + 11)
    return img.astype(np.float32), txt.astype(np.float32), owner, langs


def test_a_language_map_closes_a_rotated_language_gap_that_centring_leaves():
    img, txt, owner, langs = _rotated_languages()
    tr, va = np.arange(180), np.arange(180, 240)
    base = dict(head="linear", epochs=12, batch_size=64, lr=1e-2, embed_dim=16, patience=12)
    _, _, centred = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base, centring="language"), languages=langs)
    _, _, mapped = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base, centring="language-map"),
                               languages=langs)
    assert set(mapped["text_centres"].maps) == {"de"} and not centred["text_centres"].maps

    def gap(r):
        return r["val_by_language"]["en"]["r@10"] - r["val_by_language"]["de"]["r@10"]

    assert gap(mapped) < 10 and gap(centred) > gap(mapped) + 10, (gap(centred), gap(mapped))
    _, hist, sampled = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base, captions="per-language"),
                                   languages=langs)
    assert hist[-1]["loss"] < hist[0]["loss"] and sampled["val"]["t2i"]["r@10"] > 50
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"captions": "two"})
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"centring": "language-whiten"})
