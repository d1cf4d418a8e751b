"""L1's work is bounded by its budget on any input (issue 18): strict multiply-add accounting, stop reason reported."""

import numpy as np
import pytest

from services.alignment.l1 import DEFAULT_MAX_WORK, L1_MACS_PER_SECOND, L1_REFINE_SECONDS, l1_refine
from services.alignment.procrustes import orthogonality_error
from services.alignment.registry import align
from services.alignment.vectors import WordVectors
from tests.services.alignment.align_fixtures import random_rotation


def _far_pairs(n=800, d=16, seed=0):
    """B = A R for a rotation far from I, plus noise: every flow keeps lowering the loss for a long time."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    return A, A @ random_rotation(d, rng) + 0.05 * rng.standard_normal((n, d))


def test_default_budget_is_the_documented_time_bound():
    assert DEFAULT_MAX_WORK == L1_REFINE_SECONDS * L1_MACS_PER_SECOND


@pytest.mark.parametrize("mode", ["faithful", "flow", "orthogonal"])
def test_a_wandering_flow_stops_at_the_budget_and_never_raises_the_loss(mode):
    A, B = _far_pairs()
    p, d = A.shape
    free = l1_refine(A, B, mode=mode, max_work=None, holdout=0, mu_start=1e-6, max_steps=60, stride=1)
    assert free.stop_reason != "work_budget"
    budget = 0.3 * free.work
    bounded = l1_refine(A, B, mode=mode, max_work=budget, holdout=0, mu_start=1e-6, max_steps=60, stride=1)
    assert bounded.stop_reason == "work_budget" and bounded.stats()["stop_reason"] == "work_budget"
    assert 0 < bounded.work <= budget and bounded.max_work == budget
    assert bounded.work > budget - 6 * (2 * p * d * d + 3 * d ** 3)  # it used what it had (a few products left)
    assert bounded.loss_final <= bounded.loss_initial
    assert orthogonality_error(bounded.M) < 1e-5


def test_one_output_step_of_a_stiff_faithful_flow_cannot_overspend():
    """With a long output step VODE would evaluate the field many times inside one ``integrate`` call: the
    budget is charged per evaluation, so it stops inside the step and keeps the last accepted M (here I)."""
    A, B = _far_pairs(n=400, d=12, seed=3)
    p, d = A.shape
    per_eval = 2.0 * p * d * d + 3.0 * d ** 3
    res = l1_refine(A, B, mode="faithful", dt=5e-2, max_work=5 * per_eval)
    assert res.stop_reason == "work_budget" and res.work <= 5 * per_eval
    assert res.steps == 0 and np.allclose(res.M, np.eye(d)) and res.loss_final == res.loss_initial


def test_a_budget_below_one_product_returns_the_identity():
    A, B = _far_pairs(n=200, d=8)
    for mode in ("faithful", "flow", "orthogonal"):
        res = l1_refine(A, B, mode=mode, max_work=10.0, holdout=0)
        assert res.stop_reason == "work_budget" and res.work == 0 and np.array_equal(res.M, np.eye(8))


def test_rounds_share_one_budget_in_the_pipeline():
    rng = np.random.default_rng(2)
    n, d = 600, 12
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = X @ random_rotation(d, rng).astype(np.float32) * 0.2 + X * 0.8 + 0.05 * rng.standard_normal((n, d))
    Y = (Y / np.linalg.norm(Y, axis=1, keepdims=True)).astype(np.float32)
    src, tgt = WordVectors([f"s{i}" for i in range(n)], X), WordVectors([f"t{i}" for i in range(n)], Y)
    options = {"l1": {"mode": "orthogonal", "holdout": 0, "mu_start": 1e-6, "rounds": 3}}
    free = align(src, tgt, "l1", options={"l1": {**options["l1"], "max_work": None}}).mapping.stats["stages"][0]
    budget = 0.5 * free["work"]
    stats = align(src, tgt, "l1", options={"l1": {**options["l1"], "max_work": budget}}).mapping.stats["stages"][0]
    assert stats["work"] <= budget < free["work"]
    assert stats["stop_reason"] == "work_budget" and stats["loss_final"] <= stats["loss_initial"]


@pytest.mark.parametrize("mode", ["faithful", "flow", "orthogonal"])
def test_torch_backend_is_the_numpy_refinement(mode):
    """The GPU path (torch; here on CPU) runs the same solver: same steps, stop reason, work and M."""
    A, B = _far_pairs(n=300, d=10, seed=5)
    kw = dict(mode=mode, holdout=0.2, max_steps=30, stride=2, max_work=None)
    ref = l1_refine(A, B, backend="numpy", **kw)
    got = l1_refine(A, B, backend="torch", **kw)
    assert (got.steps, got.stop_reason, got.work) == (ref.steps, ref.stop_reason, ref.work)
    np.testing.assert_allclose(got.M, ref.M, atol=1e-6)
    assert got.loss_final == pytest.approx(ref.loss_final, rel=1e-6)


def test_the_default_dictionary_never_reads_beyond_the_cut():
    """The registry's L1 default (dictionary=restricted): the dictionary it refines on reads only the first
    max_vocab rows of each side, so its cost is bounded by the cut whatever the vocabulary -- rows beyond the
    cut set to NaN change nothing. The reference rule reads them all (r over the whole vocabularies)."""
    from services.alignment.l1 import l1_dictionary
    from services.alignment.registry import ALIGNERS

    assert ALIGNERS["l1"].defaults["dictionary"] == "restricted"
    rng = np.random.default_rng(3)
    X = rng.standard_normal((700, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = (X + 0.1 * rng.standard_normal(X.shape)).astype(np.float32)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    poisoned_X, poisoned_Y = X.copy(), Y.copy()
    poisoned_X[200:], poisoned_Y[200:] = np.nan, np.nan
    clean = l1_dictionary(X, Y, max_vocab=200, rule="restricted")
    assert len(clean) > 150
    np.testing.assert_array_equal(l1_dictionary(poisoned_X, poisoned_Y, max_vocab=200, rule="restricted"), clean)
    assert not np.array_equal(l1_dictionary(poisoned_X, poisoned_Y, max_vocab=200, rule="reference"),
                              l1_dictionary(X, Y, max_vocab=200, rule="reference"))
