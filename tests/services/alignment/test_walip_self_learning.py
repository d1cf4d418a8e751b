"""WALIP step 2, variant "self-learning" (VecMap's robust self-learning, ACL 2018) on planted worlds (issue 15)."""

import numpy as np
import pytest

from services.alignment.walip import WALIP_VARIANTS, walip_confident
from services.alignment.walip_self_learning import SELF_LEARNING_FINAL_ITER, walip_self_learning
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world


@pytest.fixture(scope="module")
def hard_world():
    # Noisy enough (noise 0.6 in 32-d) that a map fitted on a handful of right pairs among wrong ones is poor.
    return planted_world(n=1000, d=32, noise=0.6, seed=11, identical_fraction=0.05)


def weak_seeds(world, n_seeds: int = 40, n_wrong: int = 32, seed: int = 0) -> np.ndarray:
    """``n_seeds`` gold pairs of which ``n_wrong`` get a random target: a weak, mostly wrong seed dictionary."""
    rng = np.random.default_rng(seed)
    seeds = world.gold[rng.choice(len(world.gold), n_seeds, replace=False)].copy()
    bad = rng.choice(n_seeds, n_wrong, replace=False)
    seeds[bad, 1] = rng.integers(0, len(world.tgt), n_wrong)
    return seeds


def test_self_learning_recovers_the_rotation_from_a_mostly_wrong_seed_where_confident_fails(hard_world):
    w = hard_world
    seeds = weak_seeds(w)
    gold = {tuple(p) for p in w.gold.tolist()}
    assert np.mean([tuple(p) in gold for p in seeds.tolist()]) == pytest.approx(0.2)  # 8 right pairs of 40
    sl = walip_self_learning(w.src.vectors, w.tgt.vectors, seeds, vocabulary_cutoff=None, stochastic_interval=1)
    assert nn_accuracy(w.src.vectors @ sl.W, w.tgt.vectors @ sl.Wz, w.gold) > 0.95
    assert np.mean([tuple(p) in gold for p in sl.pairs.tolist()]) > 0.95  # the final mutual dictionary
    assert sl.history[-1]["stopped_by"] in ("converged", "max_iter") and sl.history[-1]["final_fit"] == "multistep"
    keeps = [h["keep_prob"] for h in sl.history]
    assert keeps[0] == pytest.approx(0.1) and keeps[-1] == 1.0 and keeps == sorted(keeps)  # 0.1, 0.2, 0.4, 0.8, 1
    # the same seeds through the default variant: the wrong seeds stay in every fit and the run never recovers
    confident = walip_confident(w.src.vectors, w.tgt.vectors, seeds, top_pairs=300, max_vocab=None)
    assert nn_accuracy(w.src.vectors @ confident.W, w.tgt.vectors @ confident.Wz, w.gold) < 0.2


def test_self_learning_through_the_registry_is_a_walip_variant():
    from services.alignment.mapping import TwoSidedLinearStage
    from services.alignment.registry import ALIGNERS, align

    w = planted_world(n=500, d=16, noise=0.3, seed=7, identical_fraction=0.05)
    assert "self-learning" in WALIP_VARIANTS and ALIGNERS["walip"].defaults["variant"] in WALIP_VARIANTS
    from services.alignment.walip_self_learning import SELF_LEARNING_INTERVAL

    assert ALIGNERS["walip"].defaults["stochastic_interval"] == SELF_LEARNING_INTERVAL  # one documented value
    res = align(w.src, w.tgt, "walip", seed_pairs=weak_seeds(w, n_seeds=40, n_wrong=20),
                options={"variant": "self-learning", "vocabulary_cutoff": None, "stochastic_interval": 1})
    stage = res.mapping.stages[0]
    stats = res.mapping.stats["stages"][0]
    assert isinstance(stage, TwoSidedLinearStage) and stats["variant"] == "self-learning"
    assert stats["stopped_by"] in ("converged", "max_iter") and stats["final_keep_prob"] == 1.0  # ends at p = 1
    assert nn_accuracy(stage.transform_source(w.src.vectors), stage.transform_target(w.tgt.vectors), w.gold) > 0.95


def test_self_learning_is_deterministic_for_a_seed_and_reports_progress():
    w = planted_world(n=400, d=16, noise=0.3, seed=5, identical_fraction=0.1)
    seeds = weak_seeds(w, n_seeds=30, n_wrong=15, seed=1)
    calls = []
    kwargs = dict(vocabulary_cutoff=300, stochastic_interval=1, max_iter=6)
    a = walip_self_learning(w.src.vectors, w.tgt.vectors, seeds, seed=3,
                            progress=lambda *args: calls.append(args), **kwargs)
    b = walip_self_learning(w.src.vectors, w.tgt.vectors, seeds, seed=3, **kwargs)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.Wz, b.Wz) and np.array_equal(a.pairs, b.pairs)
    assert a.validation_losses == b.validation_losses
    bound = 6 + SELF_LEARNING_FINAL_ITER
    assert [c[:3] for c in calls] == [("walip", i, bound) for i in range(1, len(a.history) + 1)]
    assert all({"objective", "keep_prob", "dictionary_pairs"} <= set(c[3]) for c in calls)
    # the cap ends the stochastic phase: p jumps to 1 and the deterministic phase finishes the run
    assert a.history[-1]["stopped_by"] == "max_iter" and 6 < len(a.history) <= bound
    assert [h["keep_prob"] < 1 for h in a.history[:6]] == [True] * 6
    assert all(h["keep_prob"] == 1.0 for h in a.history[6:])
    assert int(a.pairs.max(initial=0)) < 300  # induction and the final dictionary stay inside the cutoff
    c = walip_self_learning(w.src.vectors, w.tgt.vectors, seeds, seed=4, **kwargs)  # another seed: other drops
    assert c.validation_losses != a.validation_losses


def test_progress_exception_aborts_and_invalid_inputs_are_refused():
    w = planted_world(n=200, d=8, seed=2)

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    with pytest.raises(Stop):
        walip_self_learning(w.src.vectors, w.tgt.vectors, w.gold[:20], progress=stop)
    with pytest.raises(InvalidInput):
        walip_self_learning(w.src.vectors, w.tgt.vectors, np.zeros((0, 2), np.int64))
    with pytest.raises(InvalidInput):
        walip_self_learning(w.src.vectors, w.tgt.vectors, w.gold[:20], direction="sideways")
    with pytest.raises(InvalidInput):
        walip_self_learning(w.src.vectors, w.tgt.vectors, w.gold[:20], stochastic_initial=0.0)
    with pytest.raises(InvalidInput):
        walip_self_learning(w.src.vectors, w.tgt.vectors, w.gold[:20], stochastic_interval=0)


def test_whitened_self_learning_and_single_directions_run():
    w = planted_world(n=500, d=16, noise=0.2, seed=7, identical_fraction=0.1)
    seeds = w.gold[:40]
    for kwargs in ({"whiten": True}, {"direction": "forward"}, {"direction": "backward"}):
        res = walip_self_learning(w.src.vectors, w.tgt.vectors, seeds, vocabulary_cutoff=None, stochastic_interval=1,
                                  **kwargs)
        assert nn_accuracy(w.src.vectors @ res.W, w.tgt.vectors @ res.Wz, w.gold) > 0.9, kwargs
