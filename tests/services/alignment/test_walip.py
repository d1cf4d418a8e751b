"""WALIP step 2 on planted worlds: matching rule, schedules, model selection (methods.md, "WALIP step 2")."""

import numpy as np
import pytest

from services.alignment.dictionary import identical_pairs
from services.alignment.walip import csls_match, walip_confident, walip_refine
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world


@pytest.fixture(scope="module")
def world():
    return planted_world(n=1200, d=32, noise=0.2, seed=11, identical_fraction=0.05)


def test_walip_from_identical_strings_recovers_the_rotation(world):
    seeds = identical_pairs(world.src.words, world.tgt.words)
    assert 40 <= len(seeds) <= 80
    res = walip_refine(world.src.vectors, world.tgt.vectors, seeds, max_vocab=None)
    acc = nn_accuracy(world.src.vectors @ res.W, world.tgt.vectors, world.gold)
    assert acc > 0.9
    assert res.validation_losses[res.best_iteration] == min(res.validation_losses)
    gold = {tuple(p) for p in world.gold.tolist()}
    final_precision = np.mean([tuple(p) in gold for p in res.pairs.tolist()])
    assert final_precision > 0.9 and len(res.pairs) == len(world.src)  # k = 1, q = 0: one target per source


def test_robust_walip_survives_noisy_seeds_better_than_plain(world):
    rng = np.random.default_rng(0)
    seeds = world.gold[rng.choice(len(world.gold), 60, replace=False)].copy()
    bad = rng.choice(60, 30, replace=False)  # half of the pivots are wrong
    seeds[bad, 1] = rng.integers(0, len(world.tgt), 30)
    robust = walip_refine(world.src.vectors, world.tgt.vectors, seeds, max_vocab=None, max_iter=1)
    plain = walip_refine(world.src.vectors, world.tgt.vectors, seeds, max_vocab=None, max_iter=1, robust=False)
    assert np.linalg.norm(robust.W - world.Q) < np.linalg.norm(plain.W - world.Q)


def test_code_variant_runs_and_uses_topk_threshold(world):
    seeds = identical_pairs(world.src.words, world.tgt.words)
    res = walip_refine(world.src.vectors, world.tgt.vectors, seeds, variant="code", max_vocab=None)
    assert {h["threshold_mode"] for h in res.history if h["q"] > 0} == {"topk"}
    assert nn_accuracy(world.src.vectors @ res.W, world.tgt.vectors, world.gold) > 0.9


def test_sampled_quantile_matches_exact_quantile(world):
    XW = world.src.vectors @ world.Q
    exact = csls_match(XW, world.tgt.vectors, q=0.3, k=3)
    sampled = csls_match(XW, world.tgt.vectors, q=0.3, k=3, exact_quantile_limit=0, quantile_samples=200_000)
    assert exact["threshold_mode"] == "exact" and sampled["threshold_mode"] == "sampled"
    assert abs(exact["threshold"] - sampled["threshold"]) < 0.01
    topk = csls_match(XW, world.tgt.vectors, q=0.5, k=3, threshold="topk")
    assert len(topk["pairs"]) == pytest.approx(0.5 * 3 * len(XW), rel=0.05)  # half of the top-k scores kept
    assert np.all(np.diff(np.c_[topk["pairs"][:, 0]], axis=0) >= 0)


def test_progress_exception_aborts(world):
    class Stop(Exception):
        pass

    calls = []

    def progress(stage, current, total, metrics):
        calls.append((stage, current))
        if current == 2:
            raise Stop()

    with pytest.raises(Stop):
        walip_refine(world.src.vectors, world.tgt.vectors, world.gold[:50], max_vocab=None, progress=progress)
    assert calls == [("walip", 1), ("walip", 2)]


def test_invalid_inputs():
    w = planted_world(n=100, d=8)
    with pytest.raises(InvalidInput):
        walip_refine(w.src.vectors, w.tgt.vectors, np.zeros((0, 2), np.int64))
    with pytest.raises(InvalidInput):
        walip_refine(w.src.vectors, w.tgt.vectors, w.gold, variant="nope")


def test_small_improvements_still_select_the_lowest_loss_and_the_schedule_advances(world):
    """``tol`` only paces the q/k schedule: the kept W is the argmin of the validation loss, always."""
    seeds = identical_pairs(world.src.words, world.tgt.words)
    res = walip_refine(world.src.vectors, world.tgt.vectors, seeds, max_vocab=None, tol=0.5, max_iter=10)
    assert res.best_iteration == int(np.argmin(res.validation_losses))
    assert res.best_iteration > 0  # later iterations do lower the loss, by less than 50 % each
    ks = [h["k"] for h in res.history]
    assert ks[0] == 10 and ks[-1] < 10  # no 50 % improvement: the schedule steps every iteration


def test_confident_variant_recovers_the_mapping_and_stops_at_a_fixed_point(world):
    seeds = identical_pairs(world.src.words, world.tgt.words)
    res = walip_confident(world.src.vectors, world.tgt.vectors, seeds, top_pairs=300, max_iter=20, max_vocab=None)
    assert res.Wz is not None
    assert nn_accuracy(world.src.vectors @ res.W, world.tgt.vectors @ res.Wz, world.gold) > 0.9
    gold = {tuple(p) for p in world.gold.tolist()}
    assert np.mean([tuple(p) in gold for p in res.pairs.tolist()]) > 0.95  # final mutual dictionary
    assert len(res.history) < 20 and res.history[-1]["changed"] == 0  # converged, not capped
    assert all(h["pairs_kept"] <= 300 and h["pairs_fit"] == h["pairs_kept"] + len(seeds) for h in res.history)


def test_confident_variant_with_fewer_seeds_than_dimensions(world):
    seeds = world.gold[:20]  # < d = 32: cannot whiten; the first fit is orthogonal Procrustes
    res = walip_confident(world.src.vectors, world.tgt.vectors, seeds, top_pairs=300, max_vocab=None)
    assert nn_accuracy(world.src.vectors @ res.W, world.tgt.vectors @ res.Wz, world.gold) > 0.9


def test_registry_default_walip_is_the_confident_variant(world):
    from services.alignment.mapping import TwoSidedLinearStage
    from services.alignment.registry import align

    seeds = identical_pairs(world.src.words, world.tgt.words)
    res = align(world.src, world.tgt, "walip", seed_pairs=seeds, options={"top_pairs": 300})
    assert isinstance(res.mapping.stages[0], TwoSidedLinearStage) and res.mapping.stats["stages"][0]["variant"] == "confident"
    paper = align(world.src, world.tgt, "walip", seed_pairs=seeds, options={"variant": "paper"})
    assert paper.mapping.stats["stages"][0]["variant"] == "paper"
    with pytest.raises(InvalidInput):
        align(world.src, world.tgt, "walip", seed_pairs=seeds, options={"variant": "nope"})
    with pytest.raises(InvalidInput):
        walip_confident(world.src.vectors, world.tgt.vectors, seeds, top_pairs=0)


def test_confident_with_no_rounds_is_the_multistep_fit_on_the_seeds(world):
    from services.alignment.procrustes import multistep_mapping

    seeds = identical_pairs(world.src.words, world.tgt.words)
    reports = []
    res = walip_confident(world.src.vectors, world.tgt.vectors, seeds, top_pairs=300, max_iter=0, max_vocab=None,
                          progress=lambda stage, cur, tot, info: reports.append((cur, tot)))
    assert reports == [(1, 1)]  # progress never passes its total
    X = world.src.vectors / np.linalg.norm(world.src.vectors, axis=1, keepdims=True)
    Y = world.tgt.vectors / np.linalg.norm(world.tgt.vectors, axis=1, keepdims=True)
    Wx, Wz = multistep_mapping(X[seeds[:, 0]], Y[seeds[:, 1]])
    np.testing.assert_allclose(res.W, Wx, atol=1e-5)
    np.testing.assert_allclose(res.Wz, Wz, atol=1e-5)
    assert len(res.history) == 1 and res.history[0]["pairs_fit"] == len(seeds)
    with pytest.raises(InvalidInput):
        walip_confident(world.src.vectors, world.tgt.vectors, seeds, max_iter=-1)


def test_confident_agreement_keeps_only_pairs_the_seed_fit_matches(world):
    rng = np.random.default_rng(3)
    seeds = world.gold[rng.choice(len(world.gold), 40, replace=False)].copy()
    seeds[:12, 1] = rng.integers(0, len(world.tgt), 12)  # a noisy seed fit: it matches only part of the words
    X, Y = world.src.vectors, world.tgt.vectors
    seed_only = walip_confident(X, Y, seeds, top_pairs=2000, max_iter=0, max_vocab=None)
    anchor = {tuple(p) for p in seed_only.pairs.tolist()}  # the seed fit's mutual pairs
    free = walip_confident(X, Y, seeds, top_pairs=2000, max_iter=2, max_vocab=None)
    agreed = walip_confident(X, Y, seeds, top_pairs=2000, max_iter=2, max_vocab=None, agreement=True)
    assert agreed.history[0]["mutual_pairs"] == len(anchor)  # round 1 matches under the seed fit itself
    assert len(agreed.history) >= 2 and free.history[1]["mutual_pairs"] > len(anchor)
    assert all(h["mutual_pairs"] <= len(anchor) for h in agreed.history)
