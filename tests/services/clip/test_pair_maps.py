"""The per-language map fitted on translation pairs (``map_target="translation"``, the default): the ridge
arithmetic on planted pairs, why pairs differ from the photo-mean target, and training with it (training pairs
only; languages without enough pairs fall back to the photo-mean map)."""

from __future__ import annotations

import numpy as np
import pytest

from services.clip.languages import fit_language_maps, fit_pair_maps
from services.clip.training import ClipTrainConfig, train_heads
from services.errors import InvalidInput
from tests.services.clip.test_languages import _orthogonal, _rotated_languages


def test_pair_maps_recover_a_planted_translation_and_shrink_to_the_identity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(2000, 6))
    q = _orthogonal(6, 1)
    tgt = src @ q + 0.01 * rng.normal(size=src.shape)
    langs = np.asarray(["de"] * 1000 + ["fr"] * 1000, dtype=object)
    maps = fit_pair_maps(tgt, src, langs, ridge=1e-9)
    assert set(maps) == {"de", "fr"} and maps["de"].dtype == np.float32
    assert np.allclose(maps["de"], q.T, atol=0.01) and np.allclose(maps["fr"], q.T, atol=0.01)
    assert np.allclose(fit_pair_maps(tgt, src, langs, ridge=1e7)["de"], np.eye(6), atol=1e-3)
    assert fit_pair_maps(tgt[:5], src[:5], langs[:5]) == {}  # fewer pairs than dimensions: no map
    with pytest.raises(ValueError):
        fit_pair_maps(tgt, src[:, :5], langs)


def test_pairs_target_the_translated_caption_not_the_photos_mean_caption():
    """English captions of one photo say different things; the German caption translates one of them. Regressing
    onto that caption recovers the translation; regressing onto the photo's mean English row attenuates it."""
    rng = np.random.default_rng(2)
    n, dim = 3000, 8
    content = rng.normal(size=(n, dim))
    en = [content + 1.0 * rng.normal(size=(n, dim)) for _ in range(3)]
    q = _orthogonal(dim, 3)
    de = en[0] @ q
    feats = np.concatenate(en + [de]).astype(np.float32)
    owner = np.concatenate([np.tile(np.arange(n), 3), np.arange(n)])
    langs = np.asarray(["en"] * 3 * n + ["de"] * n, dtype=object)
    photo = fit_language_maps(feats, owner, langs, "map", ridge=1e-6)["de"]
    pair = fit_pair_maps(de, en[0], ["de"] * n, ridge=1e-6)["de"]
    assert np.abs(pair - q.T).max() < 1e-3 < 0.2 < np.abs(photo - q.T).max()


def _pairs(txt, owner, langs):
    """Each photo's German row paired with its first English row."""
    first_en = {o: j for j, o in reversed(list(enumerate(owner))) if langs[j] == "en"}
    de = np.flatnonzero(langs == "de")
    return {"src": txt[[first_en[o] for o in owner[de]]], "tgt": txt[de], "owner": owner[de],
            "src_lang": ["en"] * len(de), "tgt_lang": ["de"] * len(de)}


def test_training_with_translation_maps_uses_the_training_pairs_only():
    img, txt, owner, langs = _rotated_languages()
    tr, va = np.arange(180), np.arange(180, 240)
    cfg = ClipTrainConfig(head="linear", epochs=12, batch_size=64, lr=1e-2, embed_dim=16, patience=12,
                          centring="language-map", map_target="translation")
    pairs = _pairs(txt, owner, langs)
    _, _, mapped = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=pairs)
    assert set(mapped["text_centres"].maps) == {"de"} and mapped["map_sources"] == {"de": "translation"}
    by_lang = mapped["val_by_language"]
    assert by_lang["en"]["r@10"] - by_lang["de"]["r@10"] < 10, by_lang
    # the photo-mean map is another map
    _, _, photo = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**{**cfg.__dict__, "map_target": "photo"}),
                              languages=langs, parallel=pairs)
    assert not np.allclose(photo["text_centres"].maps["de"], mapped["text_centres"].maps["de"], atol=1e-3)
    # validation photos' pairs are never used: scrambling them leaves the map as it was
    scrambled = {**pairs, "tgt": pairs["tgt"].copy()}
    val_pairs = np.isin(pairs["owner"], va)
    scrambled["tgt"][val_pairs] = np.random.default_rng(9).normal(size=(int(val_pairs.sum()), txt.shape[1]))
    _, _, same = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=scrambled)
    assert np.allclose(same["text_centres"].maps["de"], mapped["text_centres"].maps["de"])
    # without pairs (a run from files) the language takes the photo-mean map, and says so
    _, _, unpaired = train_heads(img, txt, owner, tr, va, cfg, languages=langs)
    assert unpaired["map_sources"] == {"de": "photo"} and photo["map_sources"] == {"de": "photo"}
    assert np.allclose(unpaired["text_centres"].maps["de"], photo["text_centres"].maps["de"])
    # too few pairs for a language (fewer than dimensions): that language falls back to its photo-mean map
    few = {k: (v[:10] if k != "src_lang" else v[:10]) for k, v in pairs.items()}
    _, _, sparse = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=few)
    assert sparse["map_sources"] == {"de": "photo"}
    assert ClipTrainConfig().map_target == "translation" and ClipTrainConfig().centring == "language-map"
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"map_target": "sentence"})
