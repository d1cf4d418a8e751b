"""L1 refinement (methods.md, "L1 refinement"): monotone loss, orthogonality, tangent projection, stopping rules."""

import numpy as np
import pytest

from services.alignment.l1 import holdout_split, l1_dictionary, l1_loss, l1_refine, tangent_projection
from services.alignment.procrustes import orthogonality_error
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import random_rotation


def _noisy_pairs(n=600, d=12, noise=0.3, seed=1):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    return A, A + noise * rng.standard_normal((n, d)) / np.sqrt(d)


def _plane_rotation(d, theta):
    R = np.eye(d)
    R[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return R


def _angle(M):
    return float(np.arctan2(M[1, 0], M[0, 0]))


def test_tangent_projection_lands_in_the_tangent_space():
    rng = np.random.default_rng(0)
    d = 7
    M = random_rotation(d, rng)
    G = rng.standard_normal((d, d))
    P = tangent_projection(M, G)
    S = M.T @ P
    np.testing.assert_allclose(S, -S.T, atol=1e-12)  # Mᵀπ(G) skew-symmetric: π(G) ∈ T_M O(d)
    np.testing.assert_allclose(tangent_projection(M, P), P, atol=1e-12)  # a projection: idempotent
    Sym = rng.standard_normal((d, d))
    np.testing.assert_allclose(tangent_projection(M, M @ (Sym + Sym.T)), 0, atol=1e-12)  # normal space ↦ 0
    assert np.abs(P - G).max() > 1e-3  # it did project something away


def test_faithful_flow_never_raises_the_loss_and_stays_orthogonal():
    A, B = _noisy_pairs(n=1000, d=16)
    res = l1_refine(A, B, mode="faithful", max_steps=40)
    assert res.steps == 40 and res.stop_reason == "max_steps"
    assert np.all(np.diff(res.history) <= 0)
    assert res.loss_final <= res.loss_initial
    assert res.loss_final == pytest.approx(l1_loss(A, B, res.M))
    assert res.orthogonality_error <= 1e-5


def test_faithful_flow_stops_on_orthogonality_drift_and_keeps_the_last_accepted_m():
    # The tangent flow leaves O(d) slowly (integration error); with a tight bound the drift rule ends it.
    A, B = _noisy_pairs(n=2000, d=16)
    res = l1_refine(A, B, mode="faithful", max_orth_error=1e-8, max_steps=300)
    assert res.stop_reason == "orthogonality_drift"
    assert 1 < res.steps < 300
    assert res.orthogonality_error <= 1e-8  # the drifted M was rejected
    assert res.loss_final < res.loss_initial
    assert len(res.history) == res.steps + 1
    assert res.loss_final == pytest.approx(res.history[-1])


def test_flow_follows_the_faithful_path_while_that_one_stays_orthogonal():
    """mode=flow integrates the same vector field: its first steps land where the reference's ODE solver does."""
    A, B = _noisy_pairs(n=1000, d=16)
    ref = l1_refine(A, B, mode="faithful", max_steps=30)
    flow = l1_refine(A, B, mode="flow", max_steps=30, stride=1)
    assert ref.steps == flow.steps == 30
    moved = np.abs(ref.M - np.eye(16)).max()
    assert moved > 1e-5  # the paths went somewhere
    assert np.abs(flow.M - ref.M).max() < 0.05 * moved
    np.testing.assert_allclose(flow.history, ref.history, rtol=1e-4)


def test_flow_keeps_descending_past_the_drift_stop_with_m_orthogonal():
    A, B = _noisy_pairs(n=2000, d=16)
    ref = l1_refine(A, B, mode="faithful", max_orth_error=1e-8, max_steps=300)
    assert ref.stop_reason == "orthogonality_drift"
    flow = l1_refine(A, B, mode="flow", max_steps=300, stride=1)
    assert flow.steps > ref.steps and flow.loss_final < ref.loss_final
    assert flow.orthogonality_error < 1e-12
    assert np.all(np.diff(flow.history) < 0) and flow.loss_final == pytest.approx(l1_loss(A, B, flow.M), rel=1e-6)


def test_flow_stride_covers_the_same_time_in_fewer_steps():
    A, B = _noisy_pairs(n=1000, d=16)
    fine = l1_refine(A, B, mode="flow", max_steps=200, stride=1)
    coarse = l1_refine(A, B, mode="flow", max_steps=200, stride=10)
    assert fine.steps == 200 and coarse.steps == 20  # same horizon: 200 reference steps of ODE time
    moved = np.abs(fine.M - np.eye(16)).max()
    assert np.abs(coarse.M - fine.M).max() < 0.1 * moved
    assert coarse.orthogonality_error < 1e-12


def test_flow_stops_when_a_step_improves_too_little():
    # A planted exact rotation: the flow reaches the l1 minimum (0) and the next step cannot improve enough.
    rng = np.random.default_rng(2)
    A = rng.standard_normal((300, 6))
    R = _plane_rotation(6, 0.2)
    res = l1_refine(A, A @ R, mode="flow", dt=1e-5, max_steps=5000, stride=1)
    assert res.stop_reason in ("no_improvement", "loss_increased") and 20 < res.steps < 5000
    assert res.loss_final < 0.05 * res.loss_initial
    assert abs(_angle(res.M) - 0.2) < 0.01


@pytest.mark.parametrize("mu_start", [None, 1e-6])  # smoothing continuation / exact l1 from step 1
def test_pure_minimisation_never_raises_the_loss_and_keeps_m_orthogonal(mu_start):
    A, B = _noisy_pairs(d=16, seed=2)
    res = l1_refine(A, B, holdout=0.0, max_steps=300, mu_start=mu_start)
    assert res.n_holdout == 0 and res.n_fit == len(A) and res.holdout_history == []
    assert res.loss_final < 0.995 * res.loss_initial
    assert res.loss_final == min(res.history)  # the best M on the (whole) fit set is returned
    assert res.fit_loss_final == pytest.approx(res.loss_final)
    assert orthogonality_error(res.M) < 1e-5
    np.testing.assert_allclose(res.M.T @ res.M, np.eye(A.shape[1]), atol=1e-5)


@pytest.mark.parametrize("mu_start", [None, 1e-6])
def test_pure_minimisation_recovers_a_planted_rotation(mu_start):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 8))
    R = _plane_rotation(8, 0.4)
    res = l1_refine(A, A @ R, holdout=0.0, mu_start=mu_start)
    assert res.stop_reason in ("converged", "stationary")
    assert _angle(res.M) == pytest.approx(0.4, abs=1e-3)
    assert res.loss_final < 1e-2 * res.loss_initial


def test_holdout_split_is_deterministic_disjoint_and_sized():
    fit, held = holdout_split(100, 0.2, seed=7)
    fit2, held2 = holdout_split(100, 0.2, seed=7)
    np.testing.assert_array_equal(held, held2)
    np.testing.assert_array_equal(fit, fit2)
    assert len(held) == 20 and len(fit) == 80
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(100))
    assert not np.array_equal(holdout_split(100, 0.2, seed=8)[1], held)
    assert len(holdout_split(3, 0.0)[1]) == 0
    assert len(holdout_split(1, 0.5)[0]) == 1  # the fit set is never empty
    with pytest.raises(InvalidInput):
        holdout_split(10, 1.0)


def test_early_stopping_keeps_the_best_held_out_step():
    # Fit rows follow a 0.6 rad rotation, held-out rows only 0.3 rad: descending on the fit rows the
    # held-out loss falls, bottoms out near 0.3 rad, then rises — the run must stop early and keep that M.
    rng = np.random.default_rng(0)
    n, d = 250, 6
    A = rng.standard_normal((n, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    _, held = holdout_split(n, 0.2, seed=0)
    B = A @ _plane_rotation(d, 0.6)
    B[held] = A[held] @ _plane_rotation(d, 0.3)
    res = l1_refine(A, B, patience=5)  # default: holdout=0.2, holdout_seed=0
    assert res.n_holdout == len(held) == 50
    assert res.stop_reason == "early_stopping"
    assert 0 < res.best_step < res.steps == res.best_step + 5
    assert res.holdout_loss_final == pytest.approx(min(res.holdout_history))
    assert res.holdout_loss_final < res.holdout_loss_initial
    assert res.holdout_history[-1] > res.holdout_loss_final  # it had got worse by the time it stopped
    assert 0.1 < _angle(res.M) < 0.45  # near the held-out optimum, not the fit optimum 0.6
    assert orthogonality_error(res.M) < 1e-5
    # Pure minimisation on the same data goes all the way to the fit rows' rotation.
    full = l1_refine(A, B, holdout=0.0)
    assert abs(_angle(full.M) - 0.6) < abs(_angle(res.M) - 0.6)


def test_early_stopping_returns_identity_when_every_step_hurts_the_holdout():
    rng = np.random.default_rng(4)
    n, d = 200, 5
    A = rng.standard_normal((n, d))
    _, held = holdout_split(n, 0.25, seed=3)
    B = A @ _plane_rotation(d, 0.5)
    B[held] = A[held]  # held-out rows are already aligned at M = I
    res = l1_refine(A, B, holdout=0.25, holdout_seed=3, patience=4)
    assert res.stop_reason == "early_stopping" and res.best_step == 0 and res.steps == 4
    np.testing.assert_allclose(res.M, np.eye(d))
    assert res.holdout_loss_final == pytest.approx(0.0, abs=1e-9)
    assert res.fit_loss_final == pytest.approx(res.fit_loss_initial)


def test_bad_arguments_are_rejected():
    A, B = _noisy_pairs(n=20, d=4)
    with pytest.raises(InvalidInput, match="mode"):
        l1_refine(A, B, mode="fast")
    for bad_stride in (0, 1.5, True):
        with pytest.raises(InvalidInput, match="stride"):
            l1_refine(A, B, mode="flow", stride=bad_stride)
    with pytest.raises(InvalidInput, match="patience"):
        l1_refine(A, B, patience=0)
    with pytest.raises(InvalidInput, match="holdout"):
        l1_refine(A, B, holdout=1.5)
    for bad_mu in (0.0, -1e-3):
        with pytest.raises(InvalidInput, match="mu_start"):
            l1_refine(A, B, mu_start=bad_mu)
    with pytest.raises(InvalidInput):
        l1_refine(A, B[:, :3])


def _brute_reference_dictionary(XW, Y, max_vocab, knn):
    """MUSE get_candidates (csls_knn, dico_max_rank) + S2T&T2S, written out with dense matrices."""
    S = XW @ Y.T
    r_src = np.sort(S, axis=1)[:, -knn:].mean(axis=1)
    r_tgt = np.sort(S.T, axis=1)[:, -knn:].mean(axis=1)
    csls = 2 * S - r_src[:, None] - r_tgt[None, :]
    s2t = {(i, int(csls[i].argmax())) for i in range(min(max_vocab, len(XW)))}
    t2s = {(int(csls[:, j].argmax()), j) for j in range(min(max_vocab, len(Y)))}
    return {(i, j) for (i, j) in s2t & t2s if i < max_vocab and j < max_vocab}


def test_reference_dictionary_equals_brute_force_muse_rule():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    Y = (X @ random_rotation(8, rng) + 0.6 * rng.standard_normal((300, 8))).astype(np.float32)
    Y = Y[rng.permutation(300)]
    X *= rng.uniform(0.5, 1.5, (300, 1)).astype(np.float32)  # rows used as given (inner products), as the reference
    pairs = l1_dictionary(X, Y, max_vocab=120, knn=10)
    expected = _brute_reference_dictionary(X.astype(np.float64), Y.astype(np.float64), 120, 10)
    assert 10 < len(pairs) and {tuple(p) for p in pairs.tolist()} == expected
    assert pairs[:, 0].max() < 120 and pairs[:, 1].max() < 120


def test_reference_dictionary_drops_words_whose_neighbour_lies_beyond_the_cut():
    # Source 0's true partner is target 3 (beyond a 3-word cut): the reference rule gives it no pair, the
    # restricted rule (match inside the cut) pairs it with the best target inside, a wrong one.
    d = 6
    X = np.eye(d, dtype=np.float32)[:4]
    Y = np.eye(d, dtype=np.float32)[[1, 2, 4, 0]]  # target 3 = source 0's direction; target 2 matches no source
    ref = {tuple(p) for p in l1_dictionary(X, Y, max_vocab=3, knn=1).tolist()}
    restricted = {tuple(p) for p in l1_dictionary(X, Y, max_vocab=3, knn=1, rule="restricted").tolist()}
    assert ref == {(1, 0), (2, 1)}
    assert (1, 0) in restricted and (2, 1) in restricted and (0, 2) in restricted
    with pytest.raises(InvalidInput, match="dictionary rule"):
        l1_dictionary(X, Y, rule="nope")


@pytest.mark.parametrize("mode", ["faithful", "flow", "orthogonal"])
def test_work_budget_bounds_every_mode_and_never_raises_the_loss(mode):
    """The cost is bounded by multiply-adds (a function of p and d), not by how long a flow would run."""
    A, B = _noisy_pairs(n=1000, d=16)
    p, d = A.shape
    one_step = 2.0 * p * d * d + 3.0 * d ** 3
    free = l1_refine(A, B, mode=mode, max_work=None, holdout=0, max_steps=40, stride=1)
    bounded = l1_refine(A, B, mode=mode, max_work=3 * one_step, holdout=0, max_steps=40, stride=1)
    assert free.stop_reason != "work_budget" and free.steps > 3
    assert bounded.stop_reason == "work_budget" and bounded.steps < free.steps
    assert bounded.loss_final <= bounded.loss_initial
    assert orthogonality_error(bounded.M) < 1e-5


def test_work_budget_must_be_positive():
    A, B = _noisy_pairs(n=50, d=4)
    for bad in (0, -1.0):
        with pytest.raises(InvalidInput) as err:
            l1_refine(A, B, max_work=bad)
        assert err.value.detail["field"] == "max_work"
