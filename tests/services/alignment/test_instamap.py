"""InstaMap (methods.md, "InstaMap") on a planted non-linear world: beats Kabsch/Procrustes, saves, expands."""

import numpy as np
import pytest

from services.alignment.instamap import fit_instamap
from services.alignment.mapping import Mapping
from services.alignment.procrustes import kabsch, procrustes
from services.alignment.registry import ALIGNERS
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world, unit


@pytest.fixture(scope="module")
def warped():
    """A rotation plus a smooth non-linear warp (align_fixtures.planted_world(nonlinear=...)); half the gold pairs train."""
    world = planted_world(n=600, d=16, seed=3, nonlinear=0.5)
    rng = np.random.default_rng(0)
    train = world.gold[rng.choice(len(world.gold), 300, replace=False)]
    test = world.gold[~np.isin(world.gold[:, 0], train[:, 0])]
    return world, train, test


def _residual(XS, YT, pairs):
    return float(np.mean(np.sum((unit(XS[pairs[:, 0]]) - unit(YT[pairs[:, 1]])) ** 2, axis=1)))


def test_defaults_follow_the_methods_doc():
    defaults = ALIGNERS["instamap"].defaults
    assert defaults["K"] == 70 and defaults["variant"] == "paper"
    assert defaults["T"] is None and defaults["src_step"] is None and defaults["tgt_step"] is None
    world = planted_world(n=200, d=8, seed=1)
    stage, _, history = fit_instamap(world.src.vectors, world.tgt.vectors, world.gold[:80])
    assert len(stage.iterations) == 4 and len(history) == 4  # T = 4
    assert stage.K == 70 and (stage.src_step, stage.tgt_step) == (1.0, 1.0)  # the paper's full shift both sides
    code, _, _ = fit_instamap(world.src.vectors, world.tgt.vectors, world.gold[:80], variant="code")
    assert len(code.iterations) == 3 and (code.src_step, code.tgt_step) == (1.0, 1.0)
    assert code.iterations[0].src_proj is not None  # PCA every iteration


def test_instamap_beats_rotations_on_a_planted_nonlinear_map(warped):
    world, train, test = warped
    X, Y = world.src.vectors, world.tgt.vectors
    W = procrustes(X[train[:, 0]], Y[train[:, 1]])
    Wk = kabsch(X[train[:, 0]], Y[train[:, 1]])
    base_acc = max(nn_accuracy(X @ W, Y, test), nn_accuracy(X @ Wk, Y, test))
    base_err = min(_residual(X @ W, Y, test), _residual(X @ Wk, Y, test))
    assert base_acc < 0.9  # the warp is strong enough that no rotation fits it
    for steps in ({}, {"src_step": 0.5, "tgt_step": 0.5}):
        stage, _, _ = fit_instamap(X, Y, train, K=20, **steps)
        XS, YT = stage.transform_source(X), stage.transform_target(Y)
        assert nn_accuracy(XS, YT, test) > base_acc + 0.05, steps  # held-out words, not the training pairs
        assert _residual(XS, YT, test) < 0.7 * base_err, steps


def test_expansion_grows_the_dictionary_with_mostly_correct_pairs(warped):
    world, train, _ = warped
    seeds = train[:100]
    _, pairs, history = fit_instamap(world.src.vectors, world.tgt.vectors, seeds, K=20, T=3)
    assert len(pairs) > 2 * len(seeds)
    assert history[0]["pairs"] == 100 and history[0]["pairs_next"] > 100
    assert history[1]["pairs_next"] >= history[1]["pairs"]  # the paper variant extends, never drops
    assert {tuple(p) for p in seeds.tolist()} <= {tuple(p) for p in pairs.tolist()}
    gold = {tuple(p) for p in world.gold.tolist()}
    assert np.mean([tuple(p) in gold for p in pairs.tolist()]) > 0.9
    _, no_expand, _ = fit_instamap(world.src.vectors, world.tgt.vectors, seeds, K=20, T=3, expand=False)
    assert len(no_expand) == len(seeds)


def test_code_variant_forces_full_steps_and_whole_vocabulary():
    world = planted_world(n=200, d=8, seed=1)
    X, Y, seeds = world.src.vectors, world.tgt.vectors, world.gold[:80]
    with pytest.raises(InvalidInput, match="src_step"):
        fit_instamap(X, Y, seeds, variant="code", src_step=0.5, tgt_step=0.5)
    with pytest.raises(InvalidInput, match="whole vocabularies"):
        fit_instamap(X, Y, seeds, variant="code", expand_vocab=100)
    with pytest.raises(InvalidInput, match="variant"):
        fit_instamap(X, Y, seeds, variant="fast")
    # Whole vocabulary: the replaced dictionary may pair rows beyond any cap.
    _, pairs, _ = fit_instamap(X, Y, seeds, variant="code", K=10, T=2)
    assert pairs[:, 0].max() >= 150 and len(pairs) > len(seeds)
    # The paper variant honours a cap on the expansion vocabulary.
    _, capped, _ = fit_instamap(X, Y, seeds, K=10, T=2, expand_vocab=100)
    new = {tuple(p) for p in capped.tolist()} - {tuple(p) for p in seeds.tolist()}
    assert new and all(i < 100 and j < 100 for i, j in new)


def test_saved_mapping_translates_new_words_identically(warped, tmp_path):
    world, train, test = warped
    stage, _, _ = fit_instamap(world.src.vectors, world.tgt.vectors, train, K=20)
    mapping = Mapping("instamap", [stage], params={"K": 20})
    path = mapping.save(tmp_path / "m.npz")
    loaded = Mapping.load(path)
    assert loaded.version == mapping.version and loaded.stages[0].kind == "instamap"
    # New source words, never seen in the fit: perturbed test words and random directions.
    rng = np.random.default_rng(5)
    new = unit(np.vstack([world.src.vectors[test[:20, 0]] + 0.03 * rng.standard_normal((20, 16)),
                          rng.standard_normal((5, 16))]))
    before, after = mapping.transform_source(new), loaded.transform_source(new)
    np.testing.assert_array_equal(before, after)
    YT, YT_loaded = mapping.transform_target(world.tgt.vectors), loaded.transform_target(world.tgt.vectors)
    np.testing.assert_array_equal(YT, YT_loaded)
    np.testing.assert_array_equal((before @ YT.T).argmax(axis=1), (after @ YT_loaded.T).argmax(axis=1))
    # The non-parametric stage really translates: perturbed test words land on their gold targets.
    assert np.mean((before[:20] @ YT.T).argmax(axis=1) == test[:20, 1]) > 0.8


def test_a_fit_keeps_anchors_only_and_saved_files_carry_the_translation_vectors(warped, tmp_path):
    """The fit stores no deltas (they are y_k − x_k of its own anchors: 56 MB of vecmap+instamap's 50k peak);
    shifts and saved files compute them, so a file written now still holds ``deltas`` and loads as before."""
    world, train, _ = warped
    stage, _, _ = fit_instamap(world.src.vectors, world.tgt.vectors, train, K=20)
    for it in stage.iterations:
        assert it.deltas is None
        np.testing.assert_array_equal(it.translations(), (it.tgt_anchors - it.src_anchors).astype(np.float32))
    arrays = stage.arrays()
    np.testing.assert_array_equal(arrays["it0_deltas"], stage.iterations[0].translations())
    loaded = Mapping.load(Mapping("instamap", [stage], params={"K": 20}).save(tmp_path / "m.npz")).stages[0]
    assert loaded.iterations[0].deltas is not None
    np.testing.assert_array_equal(loaded.transform_source(world.src.vectors), stage.transform_source(world.src.vectors))
