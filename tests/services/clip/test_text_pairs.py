"""Translation maps fitted on text-only pairs too (``map_pairs="photos+text"``): pairs of no photo (owner -1) join
the training photos' pairs in the map fit; pairs of validation photos never do; ``map_pairs="photos"`` ignores
text-only pairs; the default uses them, with ridge 0.1 for their maps."""

from __future__ import annotations

import numpy as np
import pytest

from services.clip.training import ClipTrainConfig, train_heads
from services.errors import InvalidInput
from tests.services.clip.test_languages import _orthogonal, _rotated_languages
from tests.services.clip.test_pair_maps import _pairs

CFG = dict(head="linear", epochs=12, batch_size=64, lr=1e-2, embed_dim=16, patience=12, centring="language-map",
           map_target="translation", map_ridge=1e-3)


def _text_only(n, dim=24, seed=0):
    """Clean translation pairs of photos not in the set: English rows of the same classes' text directions, their
    German rows the same rotation as _rotated_languages' German captions (seed + 11)."""
    draws = np.random.default_rng(seed)  # _rotated_languages' draws: the classes, A, then B
    draws.integers(0, 24, 240)
    draws.normal(size=(24, dim))
    B = draws.normal(size=(24, dim))
    rng = np.random.default_rng(seed + 100)
    src = B[rng.integers(0, 24, n)] + 0.3 * rng.normal(size=(n, dim))
    tgt = src @ _orthogonal(dim, seed + 11)
    return {"src": src.astype(np.float32), "tgt": tgt.astype(np.float32), "owner": np.full(n, -1),
            "src_lang": ["en"] * n, "tgt_lang": ["de"] * n}


def _join(a, b):
    return {"src": np.concatenate([a["src"], b["src"]]), "tgt": np.concatenate([a["tgt"], b["tgt"]]),
            "owner": np.concatenate([a["owner"], b["owner"]]), "src_lang": list(a["src_lang"]) + list(b["src_lang"]),
            "tgt_lang": list(a["tgt_lang"]) + list(b["tgt_lang"])}


def test_text_only_pairs_bring_the_map_closer_to_a_planted_translation():
    img, txt, owner, langs = _rotated_languages()
    tr, va = np.arange(180), np.arange(180, 240)
    photos = _pairs(txt, owner, langs)  # a German caption and an English caption of its photo: not a translation
    both = _join(photos, _text_only(3000))
    q = _orthogonal(24, 11)
    photos_only = ClipTrainConfig(**CFG, map_pairs="photos")
    _, _, base = train_heads(img, txt, owner, tr, va, photos_only, languages=langs, parallel=both)
    cfg = ClipTrainConfig(**CFG, map_pairs="photos+text")
    _, _, more = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=both)
    assert base["map_sources"] == more["map_sources"] == {"de": "translation"}
    # map_pairs="photos" ignores the text-only pairs: the same map as without them
    _, _, alone = train_heads(img, txt, owner, tr, va, photos_only, languages=langs, parallel=photos)
    assert np.allclose(base["text_centres"].maps["de"], alone["text_centres"].maps["de"])
    err_base = np.abs(base["text_centres"].maps["de"] - q.T).max()
    err_more = np.abs(more["text_centres"].maps["de"] - q.T).max()
    assert err_more < 0.1 < 0.3 < err_base, (err_more, err_base)
    de_base, de_more = base["val_by_language"]["de"]["r@10"], more["val_by_language"]["de"]["r@10"]
    assert de_more >= de_base, (de_base, de_more)


def test_text_only_pairs_never_bring_in_validation_photos_pairs():
    img, txt, owner, langs = _rotated_languages()
    tr, va = np.arange(180), np.arange(180, 240)
    both = _join(_pairs(txt, owner, langs), _text_only(3000))
    cfg = ClipTrainConfig(**CFG, map_pairs="photos+text")
    _, _, ref = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=both)
    scrambled = {**both, "tgt": both["tgt"].copy()}
    val_pairs = np.isin(both["owner"], va)
    assert val_pairs.sum() == 60
    scrambled["tgt"][val_pairs] = np.random.default_rng(9).normal(size=(60, txt.shape[1]))
    _, _, same = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=scrambled)
    assert np.allclose(same["text_centres"].maps["de"], ref["text_centres"].maps["de"])
    # scrambling the text-only pairs does change the map: they are used
    noisy = {**both, "tgt": both["tgt"].copy()}
    text_rows = both["owner"] == -1
    noisy["tgt"][text_rows] = np.random.default_rng(3).normal(size=(int(text_rows.sum()), txt.shape[1]))
    _, _, other = train_heads(img, txt, owner, tr, va, cfg, languages=langs, parallel=noisy)
    assert not np.allclose(other["text_centres"].maps["de"], ref["text_centres"].maps["de"], atol=1e-2)
    # the default uses text-only pairs when given (round 5), with ridge 0.1 for their maps and 1.0 otherwise
    assert ClipTrainConfig().map_pairs == "photos+text" and ClipTrainConfig().map_ridge is None
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"map_pairs": "text"})


def test_default_ridge_is_a_tenth_for_maps_fitted_with_text_only_pairs():
    from services.clip.training_options import resolved_map_ridge

    img, txt, owner, langs = _rotated_languages()
    tr, va = np.arange(180), np.arange(180, 240)
    photos = _pairs(txt, owner, langs)
    both = _join(photos, _text_only(3000))
    cfg = {k: v for k, v in CFG.items() if k != "map_ridge"}
    assert resolved_map_ridge(ClipTrainConfig(**cfg), True) == 0.1
    assert resolved_map_ridge(ClipTrainConfig(**cfg), False) == 1.0
    assert resolved_map_ridge(ClipTrainConfig(**cfg, map_ridge=0.5), True) == 0.5
    _, _, default = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**cfg), languages=langs, parallel=both)
    _, _, tenth = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**cfg, map_ridge=0.1), languages=langs,
                              parallel=both)
    _, _, one = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**cfg, map_ridge=1.0), languages=langs,
                            parallel=both)
    assert np.allclose(default["text_centres"].maps["de"], tenth["text_centres"].maps["de"])
    assert not np.allclose(default["text_centres"].maps["de"], one["text_centres"].maps["de"], atol=1e-3)
    # photos' pairs only: the default ridge is 1.0
    _, _, photos_default = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**cfg), languages=langs,
                                       parallel=photos)
    _, _, photos_one = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**cfg, map_ridge=1.0), languages=langs,
                                   parallel=photos)
    assert np.allclose(photos_default["text_centres"].maps["de"], photos_one["text_centres"].maps["de"])
