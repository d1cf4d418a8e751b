"""The unsupervised WALIP pipeline on a planted CLIP: pivots first, then the planted rotation."""

from __future__ import annotations

from tests.services.vision.conftest import planted_word_vectors

import numpy as np
import pytest

from models.clip import ClipPool
from services.errors import Unavailable
from services.vision.fingerprints import pivot_precision
from services.vision.walip_pipeline import FingerprintOptions, compute_pivots, fingerprint_seed_pairs

N_VISUAL = 80  # as planted in conftest.py
TEMPLATES = {"en": ["a photo of a {}.", "a picture of a {}."], "fr": ["une photo d'un {}.", "une image d'un {}."]}


def _opts(**kw):
    return FingerprintOptions(templates=TEMPLATES, **kw)


def test_pivots_from_planted_clip_are_precise(planted, tmp_path):
    rep = compute_pivots(planted.en_words, planted.fr_words, src_enc=planted.en, tgt_enc=planted.fr,
                         images_dir=str(planted.images_dir), src_lang="en", tgt_lang="fr", options=_opts(),
                         cache_dir=str(tmp_path))
    pairs = rep.pivots.pairs
    m = pivot_precision(pairs, planted.gold)
    assert m["n_pivots"] >= 25
    assert m["precision"] >= 0.9
    # the visual filter kept (almost) only words that have images behind them
    assert (rep.pivots.src_kept < N_VISUAL).mean() >= 0.95
    assert rep.n_images == {"en": 90, "fr": 90} and rep.skipped_images == {"en": 0, "fr": 0}
    assert set(rep.timings) == {"images", "text", "matching"}
    # two languages with two CLIP models: two image-set cache entries
    assert len(list((tmp_path / "images").glob("*.npy"))) == 2


def test_code_variant_and_max_words(planted):
    rep = compute_pivots(planted.en_words, planted.fr_words, src_enc=planted.en, tgt_enc=planted.fr,
                         images_dir=str(planted.images_dir), src_lang="en", tgt_lang="fr",
                         options=_opts(variant="code", max_words=120))
    assert rep.src_words == 120 and rep.tgt_words == 120
    assert rep.pivots.pairs[:, 0].max() < 120 and rep.pivots.pairs[:, 1].max() < 120
    m = pivot_precision(rep.pivots.pairs, planted.gold)
    assert m["n_pivots"] > 0 and m["precision"] >= 0.8


def test_progress_errors_abort(planted):
    def stop(stage, cur, tot, metrics):
        if stage.startswith("text"):
            raise RuntimeError("cancelled by test")

    with pytest.raises(RuntimeError, match="cancelled by test"):
        compute_pivots(planted.en_words, planted.fr_words, src_enc=planted.en, tgt_enc=planted.fr,
                       images_dir=str(planted.images_dir), src_lang="en", tgt_lang="fr", options=_opts(),
                       progress=stop)


def test_seed_pairs_through_pool(planted):
    class PlantedPool(ClipPool):
        def for_language(self, lang):
            return {"en": planted.en, "fr": planted.fr}[lang]

    pairs = fingerprint_seed_pairs(planted.en_words, planted.fr_words, images_dir=str(planted.images_dir),
                                   src_lang="en", tgt_lang="fr", options={"templates": TEMPLATES},
                                   pool=PlantedPool())
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert pivot_precision(pairs, planted.gold)["precision"] >= 0.9


def test_seed_pairs_missing_weights_is_unavailable(planted):
    with pytest.raises(Unavailable, match="ViT-B-32"):
        fingerprint_seed_pairs(["a"], ["b"], images_dir=str(planted.images_dir), src_lang="en", tgt_lang="fr",
                               clip_model="ViT-B-32", clip_pretrained="laion2b_s34b_b79k")


@pytest.mark.parametrize("variant", ["confident", "paper"])
def test_full_walip_recovers_planted_rotation(planted, variant):
    registry = pytest.importorskip("services.alignment.registry")  # noqa: F841
    from services.alignment.vectors import WordVectors
    from services.vision.walip_pipeline import run_walip

    X, Y, R = planted_word_vectors(planted)
    src = WordVectors(list(planted.en_words), X.astype(np.float32))
    tgt = WordVectors(list(planted.fr_words), Y.astype(np.float32))
    run = run_walip(src, tgt, src_enc=planted.en, tgt_enc=planted.fr, images_dir=str(planted.images_dir),
                    src_lang="en", tgt_lang="fr", options=_opts(), eval_pairs=planted.gold,
                    align_options={"variant": variant})
    assert run.pivot_metrics["precision"] >= 0.9
    assert run.final_metrics["p@1"] >= 0.95  # abstract words too: the rotation carries them
    mapping = run.align.mapping
    mapped = mapping.transform_source(X.astype(np.float32))
    if variant == "paper":  # one-sided: the planted rotation itself
        assert np.abs(mapped - X @ R).max() < 0.1
    else:  # two-sided (multi-step): X Wx and Y Wz meet, every source word on its planted target
        Yt = mapping.transform_target(Y.astype(np.float32))
        cos = (mapped / np.linalg.norm(mapped, axis=1, keepdims=True)) @ (Yt / np.linalg.norm(Yt, axis=1, keepdims=True)).T
        gold = np.asarray(planted.gold)
        assert np.mean(cos[gold[:, 0]].argmax(axis=1) == gold[:, 1]) >= 0.95
    s = run.summary()
    assert s["initial_matching"]["n_pivots"] == len(run.pivots.pivots.pairs) and "final" in s
