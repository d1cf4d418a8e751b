"""WALIP step 2's final stage (issue 15): deterministic union CSLS self-learning, then the multi-step fit."""

import numpy as np
import pytest

from services.alignment.dictionary import identical_pairs
from services.alignment.procrustes import procrustes
from services.alignment.walip import walip_confident
from services.alignment.walip_final import union_refine, with_final_stage
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world


def _noisy_seeds(world, n_seeds: int, wrong_fraction: float, seed: int = 1) -> np.ndarray:
    """n_seeds gold pairs, a fraction of them pointed at random targets (wrong identical strings: names, numbers)."""
    rng = np.random.default_rng(seed)
    seeds = world.gold[rng.choice(len(world.gold), n_seeds, replace=False)].copy()
    wrong = rng.choice(n_seeds, int(wrong_fraction * n_seeds), replace=False)
    seeds[wrong, 1] = (seeds[wrong, 1] + 1 + rng.integers(0, len(world.gold) - 1, len(wrong))) % len(world.gold)
    return seeds


@pytest.fixture(scope="module")
def hard_world():
    return planted_world(n=900, d=24, noise=0.4, seed=5, identical_fraction=0.0)


def _precision(pairs: np.ndarray, world) -> float:
    gold = {tuple(p) for p in world.gold.tolist()}
    return float(np.mean([tuple(p) in gold for p in pairs.tolist()]))


def test_union_stage_recovers_the_rotation_from_half_wrong_seeds(hard_world):
    w = hard_world
    X, Y = w.src.vectors, w.tgt.vectors
    seeds = _noisy_seeds(w, 60, 0.5)
    assert _precision(seeds, w) == pytest.approx(0.5)
    W0 = procrustes(X[seeds[:, 0]], Y[seeds[:, 1]])
    before = nn_accuracy(X @ W0, Y, w.gold)
    assert before < 0.5  # the seeds alone do not find the rotation
    out = union_refine(X, Y, W0, np.eye(X.shape[1]), seeds, vocab=None)
    after = nn_accuracy(X @ out["Wx"], Y @ out["Wz"], w.gold)
    assert after > 0.95
    induced = out["pairs"][: -len(seeds)]  # union pairs first, then the seeds (kept)
    assert len(induced) == 2 * len(X) and np.array_equal(out["pairs"][-len(seeds):], seeds)
    assert _precision(induced, w) > 0.95  # far above the seeds' 0.5
    # the orthogonal map of the induced dictionary is the planted rotation (a random rotation is ~sqrt(2d) = 7 away)
    assert np.linalg.norm(procrustes(X[induced[:, 0]], Y[induced[:, 1]]) - w.Q) < 0.5
    assert out["final_fit"] == "multistep"


def test_union_stage_stops_when_the_objective_stalls_and_respects_max_iter(hard_world):
    w = hard_world
    X, Y = w.src.vectors, w.tgt.vectors
    seeds = _noisy_seeds(w, 60, 0.5)
    W0 = procrustes(X[seeds[:, 0]], Y[seeds[:, 1]])
    out = union_refine(X, Y, W0, np.eye(X.shape[1]), seeds, vocab=None, max_iter=20, threshold=1e-4)
    objectives = [h["objective"] for h in out["history"]]
    assert out["stopped_by"] == "converged" and len(objectives) < 20
    assert not out["history"][-1]["improved"] and all(h["improved"] for h in out["history"][:-1])
    assert objectives[-1] - max(objectives[1:-1]) < 1e-4  # the stall that ended it
    assert all(b >= a - 1e-6 for a, b in zip(objectives[1:-1], objectives[2:-1]))
    capped = union_refine(X, Y, W0, np.eye(X.shape[1]), seeds, vocab=None, max_iter=2)
    assert capped["stopped_by"] == "max_iter" and len(capped["history"]) == 2
    # vocab bounds the induction: 2 x 300 union pairs, then the seeds
    small = union_refine(X, Y, W0, np.eye(X.shape[1]), seeds, vocab=300, max_iter=3)
    assert len(small["pairs"]) == 600 + len(seeds) and small["pairs"][:600].max() < 300
    with pytest.raises(InvalidInput):
        union_refine(X, Y, W0, np.eye(X.shape[1]), seeds, max_iter=0)


def test_final_stage_lifts_a_stalled_confident_run(hard_world):
    """Rounds capped at a few pairs from half-wrong seeds end on a poor map; the stage continues from it."""
    w = hard_world
    X, Y = w.src.vectors, w.tgt.vectors
    seeds = _noisy_seeds(w, 60, 0.5)
    rounds = walip_confident(X, Y, seeds, top_pairs=30, max_iter=2, max_vocab=None)
    before = nn_accuracy(X @ rounds.W, Y @ rounds.Wz, w.gold)
    res = with_final_stage(rounds, X, Y, seeds, max_vocab=None)
    after = nn_accuracy(X @ res.W, Y @ res.Wz, w.gold)
    assert after > 0.95 and after > before + 0.2
    stage = [h for h in res.history if h.get("stage") == "final"]
    assert res.history[: len(rounds.history)] == rounds.history and stage and "stopped_by" in stage[-1]
    assert len(res.validation_losses) == len(rounds.validation_losses) + len(stage)
    assert _precision(res.pairs, w) > 0.95  # the returned dictionary: mutual CSLS pairs of the final maps
    assert with_final_stage(rounds, X, Y, seeds, final_stage="none") is rounds
    with pytest.raises(InvalidInput, match="final_stage"):
        with_final_stage(rounds, X, Y, seeds, final_stage="nope")


def test_registry_final_stage_is_an_option_and_the_default_is_the_confident_rounds():
    from services.alignment.registry import align

    world = planted_world(n=900, d=24, noise=0.2, seed=5, identical_fraction=0.05)
    seeds = identical_pairs(world.src.words, world.tgt.words)
    res = align(world.src, world.tgt, "walip", seed_pairs=seeds,
                options={"top_pairs": 300, "confident_vocab": None, "final_stage": "union"})
    stats = res.mapping.stats["stages"][0]
    assert stats["variant"] == "confident" and stats["final_stage"] == "union"
    final = [h for h in stats["history"] if h.get("stage") == "final"]
    assert final and res.pairs_used == final[-1]["pairs_fit"] == 2 * 900 + len(seeds)
    m = res.mapping
    assert nn_accuracy(m.transform_source(world.src.vectors), m.transform_target(world.tgt.vectors), world.gold) > 0.95
    # the default: the confident rounds alone (the final stage lost on MUSE test, issue 15), exactly walip_confident
    old = align(world.src, world.tgt, "walip", seed_pairs=seeds, options={"top_pairs": 300, "confident_vocab": None})
    direct = walip_confident(world.src.vectors, world.tgt.vectors, seeds, top_pairs=300, max_vocab=None)
    assert old.mapping.stats["stages"][0]["final_stage"] == "none"
    np.testing.assert_allclose(old.mapping.stages[0].Wx, direct.W, atol=1e-6)
    assert not any(h.get("stage") == "final" for h in old.mapping.stats["stages"][0]["history"])
    with pytest.raises(InvalidInput, match="final_stage"):
        align(world.src, world.tgt, "walip", seed_pairs=seeds, options={"final_stage": "sometimes"})
