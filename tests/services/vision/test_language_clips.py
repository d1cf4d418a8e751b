"""Per-language compact CLIPs on disjoint photos (WALIP's setting), the fingerprint pipeline on them, and step 2.

Real small towers: the pixels image tower and random static word vectors per language (services/vision/testing.py),
trained in seconds; nothing shared is read.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.clip import LanguageEncoders
from services.vision.fingerprints import pivot_precision
from services.vision.language_clips import (
    PartitionError,
    PhotoPartition,
    check_checkpoints_disjoint,
    check_partition,
    partition_photos,
    train_language_clips,
)

BARE = {"en": ["{}"], "fr": ["{}"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from services.vision.testing import tiny_language_clips

    return tiny_language_clips(tmp_path_factory.mktemp("language-clips"))


def _encoders(tiny):
    from models.compact_clip import load_compact_clip

    out = {}
    for lang, path in tiny.checkpoints.items():
        clip = load_compact_clip(path)
        out[lang] = LanguageEncoders(lang, clip, clip, clip.label)
    return out


def test_partition_is_disjoint_balanced_and_holds_out_fingerprint_photos():
    names = [f"p{i:03d}" for i in range(100)]
    no_fr = names[:10]  # photos only English captions exist for
    eligible = {"en": names, "fr": names[10:], "de": names[10:]}
    part = partition_photos(names, eligible, n_fingerprint=16, seed=1, fingerprint_first=no_fr)
    assert set(no_fr) <= set(part.fingerprint) and len(part.fingerprint) == 16
    sets = {lang: set(v) for lang, v in part.train.items()}
    assert sets["en"].isdisjoint(sets["fr"]) and sets["en"].isdisjoint(sets["de"]) and sets["fr"].isdisjoint(sets["de"])
    assert len({len(v) for v in sets.values()}) == 1 and len(sets["en"]) == (100 - 16) // 3
    assert all(s.isdisjoint(part.fingerprint) for s in sets.values())
    assert sets["fr"] <= set(eligible["fr"])
    # languages in one group share a photo set; only pairs across groups must be disjoint
    shared = partition_photos(names, eligible, n_fingerprint=16, groups=[["en"], ["fr", "de"]], seed=1)
    assert shared.train["fr"] == shared.train["de"] and set(shared.train["en"]).isdisjoint(shared.train["fr"])
    assert len(shared.train["en"]) == (100 - 16) // 2
    assert sorted(map(tuple, shared.pairs())) == [("de", "en"), ("en", "fr")]


def test_overlapping_photo_sets_are_refused_before_any_training(tmp_path):
    with pytest.raises(PartitionError, match="both en and fr"):
        check_partition(PhotoPartition({"en": ("a", "b"), "fr": ("b", "c")}))
    with pytest.raises(PartitionError, match="fingerprint photo"):
        check_partition(PhotoPartition({"en": ("a",), "fr": ("c",)}, fingerprint=("a",)))
    with pytest.raises(PartitionError):  # nothing is loaded or trained: the data below would not even work
        train_language_clips(PhotoPartition({"en": ("x",), "fr": ("x",)}), {}, {}, tmp_path)
    assert not list(tmp_path.iterdir())


def test_trained_clips_record_disjoint_photos_and_learn(tiny):
    check_checkpoints_disjoint(tiny.checkpoints, tiny.partition.fingerprint)
    from models.compact_clip import read_checkpoint

    meta = {lang: read_checkpoint(p)["meta"] for lang, p in tiny.checkpoints.items()}
    assert set(meta["en"]["photos"]).isdisjoint(meta["fr"]["photos"])
    assert not set(meta["en"]["photos"]) & set(tiny.partition.fingerprint)
    for m in meta.values():  # each CLIP retrieves its own validation photos far above chance (R@1 ~ 1/11 by chance)
        assert m["val"]["t2i"]["r@1"] >= 40.0
    with pytest.raises(PartitionError):  # the audit catches a CLIP that saw a fingerprint photo
        check_checkpoints_disjoint(tiny.checkpoints, [meta["fr"]["photos"][0]])


def test_the_audit_checks_the_pairs_the_partition_keeps_apart(tiny):
    """walip_visual.py's pairwise partition lets fr and de share photos (never aligned with each other); the
    audit of the checkpoints used to check every pair and refused that valid partition after training."""
    paths = {**tiny.checkpoints, "de": tiny.checkpoints["fr"]}  # a "de" CLIP trained on fr's very photos
    with pytest.raises(PartitionError, match="both de and fr"):
        check_checkpoints_disjoint(paths, tiny.partition.fingerprint)
    check_checkpoints_disjoint(paths, tiny.partition.fingerprint, disjoint=[("en", "fr"), ("en", "de")])
    with pytest.raises(PartitionError, match="both en and de"):  # a pair it keeps apart is still audited
        check_checkpoints_disjoint({**paths, "de": tiny.checkpoints["en"]}, (), disjoint=[("en", "de")])


def test_fingerprint_pivots_from_disjoint_clips_find_translations(tiny, tmp_path):
    from services.vision.walip_pipeline import FingerprintOptions, compute_pivots

    enc = _encoders(tiny)

    def pivots(**options):
        return compute_pivots(tiny.words["en"], tiny.words["fr"], src_enc=enc["en"], tgt_enc=enc["fr"],
                              images_dir=str(tiny.fingerprint_images), src_lang="en", tgt_lang="fr",
                              options=FingerprintOptions(templates=BARE, **options), cache_dir=str(tmp_path))

    rep = pivots(min_caption_df=1, filter_visual=False)
    # only the words the CLIPs' captions hold are fingerprinted (the colour words, not en0.. / fr0..)
    assert sorted(rep.pivots.src_kept) == list(range(12)) and sorted(rep.pivots.tgt_kept) == list(range(12))
    m = pivot_precision(rep.pivots.pairs, tiny.gold)
    assert m["n_pivots"] == 12 and m["precision"] >= 0.6  # chance: 1/12
    # the held-out photos went through the tower cache: one entry for the pixels tower
    assert list((tmp_path / "towers").glob("images-*.npy"))
    mutual = pivots(min_caption_df=1, filter_visual=False, mutual=True)
    assert len(mutual.pivots.pairs) <= len(rep.pivots.pairs)
    assert set(map(tuple, mutual.pivots.pairs.tolist())) <= set(map(tuple, rep.pivots.pairs.tolist()))


def test_walip_end_to_end_recovers_the_planted_rotation(tiny):
    from services.alignment.vectors import WordVectors, load_vectors
    from services.vision.walip_pipeline import run_walip

    enc = _encoders(tiny)
    src, tgt = (WordVectors(v.words, v.vectors) for v in (load_vectors(tiny.vectors[lang]) for lang in ("en", "fr")))
    run = run_walip(src, tgt, src_enc=enc["en"], tgt_enc=enc["fr"], images_dir=str(tiny.fingerprint_images),
                    src_lang="en", tgt_lang="fr", eval_pairs=tiny.gold,
                    options={"templates": BARE, "min_caption_df": 1, "filter_visual": False})
    assert run.pivot_metrics["precision"] >= 0.6
    assert run.final_metrics["p@1"] == pytest.approx(1.0)
    # without the images there is no bridge: shuffled pivots give a wrong map
    rng = np.random.default_rng(0)
    from services.alignment.evaluation import bli_evaluate
    from services.alignment.registry import align

    bad = np.stack([np.arange(12), rng.permutation(np.arange(12, 40))[:12]], axis=1)
    res = align(src, tgt, "walip", seed_pairs=bad)
    mapped = res.mapping.transform_source(src.vectors), res.mapping.transform_target(tgt.vectors)
    assert bli_evaluate(*mapped, tiny.gold)["p@1"] < 0.5
