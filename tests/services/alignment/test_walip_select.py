"""WALIP step 2's unsupervised setting choice: the dictionary criterion and the top_pairs selection (no gold looked at)."""

import numpy as np
import pytest

from services.alignment.dictionary import identical_pairs
from services.alignment.walip import dictionary_criterion, walip_select
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world


@pytest.fixture(scope="module")
def world():
    return planted_world(n=900, d=24, noise=0.2, seed=5, identical_fraction=0.05)


def test_criterion_prefers_the_right_dictionary_to_a_corrupted_one(world):
    X, Y = world.src.vectors, world.tgt.vectors
    gold = world.gold[:400]
    rng = np.random.default_rng(0)
    corrupted = gold.copy()
    bad = rng.choice(len(gold), 300, replace=False)
    corrupted[bad, 1] = rng.integers(0, len(Y), len(bad))
    right = dictionary_criterion(X, Y, gold)
    wrong = dictionary_criterion(X, Y, corrupted)
    assert right > wrong + 0.05
    # the same dictionary scores the same whatever map produced it: the criterion refits its own
    assert dictionary_criterion(X, Y, gold) == pytest.approx(right)
    assert dictionary_criterion(X, Y, gold[:1]) == float("-inf")


def test_select_runs_every_candidate_and_keeps_the_best_by_criterion(world):
    seeds = identical_pairs(world.src.words, world.tgt.words)
    res, table = walip_select(world.src.vectors, world.tgt.vectors, seeds, candidates=(50, 400), max_vocab=None)
    assert [row["top_pairs"] for row in table] == [50, 400]
    best = max(table, key=lambda r: r["criterion"])  # the first of equal bests
    assert [row["chosen"] for row in table] == [row is best for row in table]
    assert dictionary_criterion(world.src.vectors, world.tgt.vectors, res.pairs) == pytest.approx(best["criterion"])
    assert nn_accuracy(world.src.vectors @ res.W, world.tgt.vectors @ res.Wz, world.gold) > 0.9
    with pytest.raises(InvalidInput):
        walip_select(world.src.vectors, world.tgt.vectors, seeds, candidates=())


def test_registry_top_pairs_auto_records_the_selection(world):
    from services.alignment.registry import align

    res = align(world.src, world.tgt, "walip", options={"top_pairs": "auto", "top_pairs_candidates": [50, 400],
                                                         "confident_vocab": None})
    stage = res.mapping.stats["stages"][0]
    assert [row["top_pairs"] for row in stage["top_pairs_selection"]] == [50, 400]
    assert sum(row["chosen"] for row in stage["top_pairs_selection"]) == 1
    with pytest.raises(InvalidInput, match="top_pairs"):
        align(world.src, world.tgt, "walip", options={"top_pairs": "many"})
