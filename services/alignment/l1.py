"""L1 refinement: orthogonal M minimising ‖A M − B‖₁ on a mutual CSLS dictionary (methods.md, "L1 refinement").

Three solvers, all starting at M₀ = I on the already aligned spaces and all returning the best M seen
(so the l1 loss never rises):

- ``mode="faithful"``: the reference's tangent-space flow dM/dt = −π(∇) with ∇ = Aᵀ(tanh Z + Z ⊙ sech² Z),
  Z = α(A M − B), α = 1e8, integrated with SciPy VODE (BDF, order 15 as passed by the reference, rtol 1e-5,
  atol 1e-7, functional iteration) in output steps of 1e-6; stops when a step improves the loss by less
  than 5e-3 or worsens it, when max|M Mᵀ − I| > 1e-5, or after 5000 steps; keeps the last accepted M.
- ``mode="flow"`` (ours): the same vector field −π(∇), integrated with Cayley steps, so M stays orthogonal
  to rounding and the drift rule never fires; the reference's other stopping rules apply (a step that
  improves the loss by less than the threshold or worsens it ends the run) and so does its horizon
  (5000 output steps of 1e-6). A Cayley step covers ``stride`` output steps (default 20: the end point is
  within 0.15 % of the stride-1 path's, measured on Procrustes en→fr; 250 steps, ~3 s on 2 cores).
  Its first steps land where the reference's ODE solver lands (test). In the reference's setting (below)
  it runs the whole horizon: l1 −7.15 %, P@1 CSLS 37.7 → 38.7 (27 queries won, 17 lost), NN +0.7. The
  gain does not carry over to other inputs: CSLS −0.6 on Procrustes en→fr, −1.1 on WALIP en→fr and
  en→de, 0.0 on VecMap en→de, +0.3 on Procrustes en→de (the faithful flow: +0.3, −0.2, 0.0, +0.2, −0.3).
- ``mode="orthogonal"`` (ours): Riemannian gradient descent on O(d) with Cayley-map steps
  M ← M (I + η/2 Ω)⁻¹ (I − η/2 Ω), Ω = Mᵀ G − Gᵀ M skew, on the smoothed loss Σ √(r² + μ²)
  (μ halved whenever progress stalls: continuation towards the exact l1), Armijo backtracking line search.
  Cayley steps keep M orthogonal to rounding (re-projected by polar decomposition every 50 steps), so
  the descent never has to stop for drift. ``mu_start`` (default: half the median |residual|) sets the
  first μ; ``mu_start=1e-6`` (= ``mu_min``) descends the exact l1 from the first step, like the
  reference's α = 1e8 flow.

  Measured in the reference's own setting (benchmarks/bli.py; VecMap-supervised en→fr, the vectors as
  VecMap writes them, the reference dictionary rule: 2,692 mutual pairs, l1 20,954 at I — the authors'
  run: 2,691 pairs, 20,944): the faithful flow stops on drift after 68 steps, l1 −0.49 %, P@1 CSLS
  37.7 → 38.1, NN 34.7 → 34.7 (the authors: 64 steps, −0.46 %, 38.1); exact l1 (``mu_start=1e-6``,
  pure minimisation) converges in 380 steps, l1 −11.3 %, CSLS 38.0, NN 35.7. Minimising further buys
  nearest-neighbour P@1 on supervised inputs (+0.8 to +1.1 with early stopping or exact l1 on VecMap /
  Procrustes en→fr) but not CSLS P@1: the dictionary pairs are the current CSLS decisions, and fitting
  them teaches plain cosine what CSLS already knew. Paired over the 1,053 test queries, the faithful flow
  barely moves anything (its +0.4 here: 4 queries won, 0 lost), the orthogonal modes reshuffle 60–70
  (CSLS +0.2 / +0.3, intervals around zero); on WALIP outputs they lose 1.4–1.9 CSLS points (intervals
  below zero), which is why the registry's default is the faithful flow (mode=flow as well: averaged
  over the six inputs it moves CSLS by −0.27, the faithful flow by +0.06).

  Held-out early stopping (default, ``holdout=0.2``): the exact minimiser overfits the induced
  dictionary (measured on supervised-Procrustes en→fr, 50k words, 2,792 pairs: the held-out l1 rises
  after ~15–30 steps; P@1 CSLS 35.2 → 35.3 at the held-out best step, 34.0 at full convergence of the
  exact l1; NN 31.0 → 31.9 and 31.7). So the dictionary
  is split deterministically (``holdout_seed``) into fit / holdout rows, the descent runs on the fit
  rows, the M with the lowest held-out l1 loss (M₀ = I included) is kept, and the run stops after
  ``patience`` steps without a held-out improvement. ``holdout=0`` gives pure minimisation of the full
  dictionary's loss (the best M by that loss is kept, so it never rises).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.alignment.procrustes import orthogonality_error
from services.errors import InvalidInput

__all__ = ["MODES", "L1Result", "holdout_split", "l1_dictionary", "l1_loss", "l1_refine", "tangent_projection",
           "DEFAULT_MAX_WORK"]

ProgressFn = Callable[[str, int, int, dict], None]
MODES = ("faithful", "flow", "orthogonal")

# Work bound of the refinement (issue 18), in multiply-adds of its dense products (p × d × d and d × d × d): the
# cost is a function of the dictionary size p and the dimension d, never of how long a flow wanders. Every
# product is charged *before* it runs and one that would overspend is not run, so a refinement never spends
# more than the budget; with ``rounds`` the budget covers all rounds together. The default is the documented
# time bound L1_REFINE_SECONDS at L1_MACS_PER_SECOND, the slowest rate measured for any mode on the 2-core
# development box under heavy load from other jobs (load average 7.5), multiply-adds per second with the
# elementwise work and solver overhead included, products on one BLAS thread (see _blas_threads): faithful
# 6.8e9 / 6.5e9 / 4.9e9 at p = 1,000 / 2,700 / 8,000 (d = 300), flow 1.05e10-1.19e10 (float32 products),
# orthogonal (exact l1) 6.6e9 / 6.5e9 / 6.0e9. 1.6e11 leaves the documented runs untouched: the reference's
# own (faithful, VecMap en→fr: 68 steps, 9.6e10) and mode=flow to the reference's horizon (250 Cayley steps,
# 1.4e11), while a 20k × 512 encoder space (p ≈ 8k) stops after ~40 field evaluations instead of running for
# hours. The dictionary the refinement runs on costs two exact sweeps of the n × m scores on top
# (l1_dictionary): quadratic in the vocabulary, bounded and deterministic, measured in benchmarks/scale.py.
L1_REFINE_SECONDS = 32.0
L1_MACS_PER_SECOND = 5e9
DEFAULT_MAX_WORK = L1_REFINE_SECONDS * L1_MACS_PER_SECOND


class _BudgetSpent(Exception):
    """The next product would overspend the work budget."""


class _Work:
    """Multiply-adds spent so far against a budget (None: unbounded); ``charge`` before each product."""

    def __init__(self, budget: float | None):
        self.budget, self.spent, self.stopped = budget, 0.0, False

    def charge(self, macs: float) -> None:
        if self.budget is not None and self.spent + macs > self.budget:
            self.stopped = True
            raise _BudgetSpent
        self.spent += macs


@dataclass
class L1Result:
    M: np.ndarray
    loss_initial: float
    loss_final: float
    steps: int
    stop_reason: str
    orthogonality_error: float
    seconds: float
    history: list[float] = field(default_factory=list)
    # Held-out early stopping (orthogonal mode with holdout > 0); for the other modes the "fit" set is the
    # whole dictionary and the holdout fields are None.
    best_step: int = 0
    fit_loss_initial: float | None = None
    fit_loss_final: float | None = None
    holdout_loss_initial: float | None = None
    holdout_loss_final: float | None = None
    n_fit: int = 0
    n_holdout: int = 0
    holdout_history: list[float] = field(default_factory=list)
    work: float = 0.0  # multiply-adds spent (never above max_work)
    max_work: float | None = None

    def stats(self) -> dict:
        """JSON-able summary (no M, no histories) for mapping stats and benchmarks."""
        return {"loss_initial": self.loss_initial, "loss_final": self.loss_final, "steps": self.steps,
                "best_step": self.best_step, "stop_reason": self.stop_reason,
                "orthogonality_error": self.orthogonality_error, "seconds": self.seconds,
                "fit_pairs": self.n_fit, "holdout_pairs": self.n_holdout,
                "fit_loss_initial": self.fit_loss_initial, "fit_loss_final": self.fit_loss_final,
                "holdout_loss_initial": self.holdout_loss_initial, "holdout_loss_final": self.holdout_loss_final,
                "work": self.work, "max_work": self.max_work}


def l1_loss(A: np.ndarray, B: np.ndarray, M: np.ndarray) -> float:
    """‖A M − B‖₁ (sum of absolute residuals)."""
    return float(np.abs(A @ M - B).sum())


def l1_dictionary(
    XW: np.ndarray, Y: np.ndarray, *, max_vocab: int = 10000, knn: int = 10, rule: str = "reference",
    backend: str = "auto",
) -> np.ndarray:
    """Mutual CSLS-10 nearest neighbours (S2T & T2S) of the ``max_vocab`` most frequent words (methods.md, "L1 refinement").

    ``rule="reference"`` (the function's default; the registry's ``l1`` method defaults to ``"restricted"``,
    whose work is bounded by ``max_vocab`` whatever the vocabulary size) builds it as the reference does (MUSE's ``get_candidates`` with
    ``dico_max_rank``): r_S / r_T over the whole vocabularies, each of the first ``max_vocab`` words of one
    side retrieves its CSLS nearest neighbour among *all* words of the other side, and a pair is kept only
    when both words are among the first ``max_vocab`` and each is the other's neighbour. A word whose
    nearest neighbour lies beyond the cut gives no pair (measured on VecMap-supervised en→fr, 50k words:
    2,692 pairs, as the reference's 2,691). ``rule="restricted"`` first cuts both vocabularies to
    ``max_vocab`` and matches inside them (more pairs, noisier: 4,152 there). Rows are used as given
    (inner products), as the reference does. Cost: two exact sweeps, the second over the first ``max_vocab``
    rows and columns only (on CPU: only the rows the first cannot certify) (services/alignment/sweep.py, ``backend="auto"``; a named backend runs the four
    searches of before).
    """
    from services.alignment.retrieval import csls_topk, knn_mean_similarity, mutual_nn, mutual_nn_fused

    if rule == "restricted":
        pairs, _ = mutual_nn(XW, Y, retrieval="csls", knn=knn, max_src=max_vocab, max_tgt=max_vocab, backend=backend)
        return pairs
    if rule != "reference":
        raise InvalidInput(f"unknown L1 dictionary rule {rule!r}; use 'reference' or 'restricted'",
                           detail={"field": "dictionary"})
    if len(XW) == 0 or len(Y) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    n_src, n_tgt = min(max_vocab, len(XW)), min(max_vocab, len(Y))
    if backend == "auto":  # r over the whole vocabularies, neighbours of the first words: two sweeps
        fwd, bwd, _, _ = mutual_nn_fused(XW, Y, retrieval="csls", knn=knn, fwd_rows=n_src, bwd_cols=n_tgt)
        bwd = bwd[:, None]
    else:
        r_src = knn_mean_similarity(XW, Y, knn, backend=backend)  # r_T(x) for every source word
        r_tgt = knn_mean_similarity(Y, XW, knn, backend=backend)  # r_S(y) for every target word
        _, fwd = csls_topk(XW[:n_src], Y, 1, r_tgt, r_src[:n_src], backend=backend)
        _, bwd = csls_topk(Y[:n_tgt], XW, 1, r_src, r_tgt[:n_tgt], backend=backend)
        fwd = fwd[:, 0]
    src = np.arange(n_src, dtype=np.int64)
    inside = fwd < n_tgt
    mutual = np.zeros(n_src, dtype=bool)
    mutual[inside] = bwd[fwd[inside], 0] == src[inside]
    return np.stack([src[mutual], fwd[mutual]], axis=1).astype(np.int64)


def tangent_projection(M: np.ndarray, G: np.ndarray) -> np.ndarray:
    """π(∇) = ½ M (Mᵀ∇ − ∇ᵀM) + (I − M Mᵀ) ∇ (methods.md, "L1 refinement")."""
    MtG = M.T @ G
    return 0.5 * M @ (MtG - MtG.T) + G - M @ (M.T @ G)


def _faithful(A, B, *, alpha, dt, min_improvement, max_orth_error, max_steps, max_seconds, progress, work, xo):
    from scipy.integrate import ode

    p, d = A.shape

    def loss_at(M):
        return xo.abs_sum(A @ xo.put(M) - B)

    def rhs(_t, m):
        work.charge(2.0 * p * d * d + 3.0 * d ** 3)  # A M, Aᵀ S, the projection's three d × d × d products
        M = m.reshape(d, d)
        G = xo.get(A.T @ xo.sign_field(A @ xo.put(M) - B, alpha))  # ∇ = Aᵀ(tanh Z + Z sech² Z), where A lives
        return -tangent_projection(M, G).ravel()

    solver = ode(rhs).set_integrator("vode", method="bdf", order=15, rtol=1e-5, atol=1e-7, with_jacobian=False)
    M = np.eye(d)
    solver.set_initial_value(M.ravel(), 0.0)
    loss = loss_at(M)
    history = [loss]
    started = time.perf_counter()
    reason = "max_steps"
    steps = 0
    for step in range(1, max_steps + 1):
        try:
            m_new = solver.integrate(solver.t + dt)
            work.charge(p * d * d + d ** 3)  # the step's loss (A M) and orthogonality check
        except (_BudgetSpent, ValueError):  # SciPy reports an exception raised in rhs as a ValueError
            if not work.stopped:
                raise
            reason = "work_budget"
            break
        if not solver.successful():
            reason = "integrator_failed"
            break
        M_new = m_new.reshape(d, d)
        if orthogonality_error(M_new) > max_orth_error:
            reason = "orthogonality_drift"
            break
        new_loss = loss_at(M_new)
        if loss - new_loss < min_improvement:
            reason = "no_improvement" if new_loss <= loss else "loss_increased"
            if new_loss < loss:  # accepted: it improved, just by too little to go on
                M, loss, steps = M_new.copy(), new_loss, step
                history.append(loss)
            break
        M, loss, steps = M_new.copy(), new_loss, step
        history.append(loss)
        if progress is not None:
            progress("l1", step, max_steps, {"loss": loss})
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            reason = "time_budget"
            break
    return M, steps, reason, history


def _flow(A, B, *, alpha, dt, stride, min_improvement, max_steps, max_seconds, progress, work, xo):
    """The reference's flow dM/dt = −π(∇), integrated with Cayley steps that keep M orthogonal (mode="flow").

    On O(d) the tangent projection is π(∇) = M skew(Mᵀ∇) and Mᵀ∇ = (A M)ᵀ S with S the smoothed signs, so a
    step is two (p × d × d) products. Each Cayley step covers ``stride`` of the reference's output steps
    (ODE time ``stride · dt``); the reference's stopping rules apply per step with the improvement
    threshold scaled by ``stride`` (a rate per unit of ODE time), and the horizon stays the reference's
    ``max_steps · dt``. Products run in float32 (M, the loss sums and the Cayley factors in float64).
    """
    p, d = A.shape
    A32, B32 = xo.to(A, np.float32), xo.to(B, np.float32)
    M = np.eye(d)
    AM = A32  # A M at M = I (never modified in place)
    R = AM - B32
    loss = xo.abs_sum(R)
    history = [loss]
    n_steps = max(1, max_steps // stride)
    h = stride * dt
    threshold = stride * min_improvement
    started = time.perf_counter()
    reason = "max_steps"
    steps = 0
    for step in range(1, n_steps + 1):
        try:
            work.charge(2.0 * p * d * d + 3.0 * d ** 3)  # (AM)ᵀ S, A M_new; the Cayley solve and M @ C
        except _BudgetSpent:
            reason = "work_budget"
            break
        MtG = xo.get(AM.T @ xo.sign_field(R, alpha))
        M_new = M @ _cayley(0.5 * (MtG - MtG.T), h)
        if step % 500 == 0:
            M_new = _polar(M_new)  # rounding only: Cayley factors are orthogonal to ~1e-16 each
        AM_new = A32 @ xo.put(M_new, np.float32)
        R_new = AM_new - B32
        new_loss = xo.abs_sum(R_new)
        if loss - new_loss < threshold:
            reason = "no_improvement" if new_loss <= loss else "loss_increased"
            if new_loss < loss:
                M, loss, steps = M_new, new_loss, step
                history.append(loss)
            break
        M, AM, R, loss, steps = M_new, AM_new, R_new, new_loss, step
        history.append(loss)
        if progress is not None and step % 10 == 0:
            progress("l1", step, n_steps, {"loss": loss})
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            reason = "time_budget"
            break
    return M, steps, reason, history


def _cayley(Omega: np.ndarray, eta: float) -> np.ndarray:
    d = Omega.shape[0]
    half = 0.5 * eta * Omega
    return np.linalg.solve(np.eye(d) + half, np.eye(d) - half)


def _polar(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    return U @ Vt


def holdout_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (seeded) split of ``n`` dictionary rows into (fit, holdout) index arrays, both sorted.

    The holdout gets round(fraction · n) rows, but the fit set always keeps at least one row; with
    ``fraction <= 0`` (or too few rows for a non-empty holdout) the holdout is empty.
    """
    if not 0.0 <= fraction < 1.0:
        raise InvalidInput(f"holdout fraction must be in [0, 1), got {fraction}")
    n_holdout = min(round(fraction * n), n - 1) if n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def _orthogonal(A, B, *, max_steps, max_seconds, mu_start, mu_min, progress, work, xo, A_ho=None, B_ho=None,
                patience=10):
    """Cayley descent on (A, B); with (A_ho, B_ho) keeps the best M by held-out l1 and stops after ``patience``
    steps without held-out improvement, else keeps the best M by the l1 loss of (A, B).

    Returns (best M, steps run, stop reason, per-step l1 on (A, B), best step, per-step held-out l1).
    """
    p, d = A.shape
    M = np.eye(d)
    R = A - B
    true = xo.abs_sum(R)
    early = A_ho is not None and len(A_ho) > 0
    ho = xo.abs_sum(A_ho - B_ho) if early else None
    best_M, best_loss, best_step = M.copy(), (ho if early else true), 0
    history = [true]
    ho_history = [ho] if early else []
    mu = mu_start if mu_start is not None else max(xo.median_abs(R) * 0.5, 1e-6)
    smooth = xo.smooth_sum

    f = smooth(R, mu)
    eta = None
    started = time.perf_counter()
    reason = "max_steps"
    steps = 0
    stall_f = f
    for step in range(1, max_steps + 1):
        try:
            work.charge(p * d * d + d ** 3)  # the gradient Aᵀ(...) and Mᵀ G
        except _BudgetSpent:
            reason = "work_budget"
            break
        G = xo.get(A.T @ xo.smooth_weights(R, mu))
        MtG = M.T @ G
        Omega = MtG - MtG.T
        gnorm2 = float((Omega * Omega).sum())
        if gnorm2 < 1e-20:
            reason = "stationary"
            break
        if eta is None:
            eta = 1e-3 / np.sqrt(gnorm2)
        accepted = False
        for _ in range(30):
            try:
                work.charge(p * d * d + 3.0 * d ** 3)  # the Cayley factor, M @ C, A M_try
            except _BudgetSpent:
                break
            M_try = M @ _cayley(Omega, eta)
            R_try = A @ xo.put(M_try) - B
            f_try = smooth(R_try, mu)
            if f_try <= f - 1e-4 * eta * 0.5 * gnorm2:
                accepted = True
                break
            eta *= 0.5
        if work.stopped and not accepted:
            reason = "work_budget"
            break
        if accepted:
            M, R, f = M_try, R_try, f_try
            eta *= 1.6
            if step % 50 == 0:
                try:
                    work.charge(p * d * d + 2.0 * d ** 3)  # the polar re-projection and A M
                    M = _polar(M)
                    R = A @ xo.put(M) - B
                    f = smooth(R, mu)
                except _BudgetSpent:
                    pass  # M stays as the Cayley steps left it (orthogonal to rounding)
            true = xo.abs_sum(R)
            score = true
            if early:
                try:
                    work.charge(len(A_ho) * d * d)  # the held-out loss
                    ho = score = xo.abs_sum(A_ho @ xo.put(M) - B_ho)
                except _BudgetSpent:
                    score = None  # an M that cannot be validated is never returned
            if score is not None and score < best_loss:
                best_M, best_loss, best_step = M.copy(), score, step
        steps = step
        history.append(true)
        if early:
            ho_history.append(ho)
            if step - best_step >= patience:
                reason = "early_stopping"
                break
        # Continuation: sharpen the smoothing when the smoothed problem stops paying (or the search failed).
        if not accepted or (step % 10 == 0 and stall_f - f < 1e-4 * abs(f)):
            if mu <= mu_min:
                reason = "converged"
                break
            mu = max(mu * 0.5, mu_min)
            f = smooth(R, mu)
            eta = None
        if step % 10 == 0:
            stall_f = f
        if progress is not None:
            info = {"loss": true, "mu": mu, **({"holdout_loss": ho} if early else {})}
            progress("l1", step, max_steps, info)
        if work.stopped:
            reason = "work_budget"
            break
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            reason = "time_budget"
            break
    return best_M, steps, reason, history, best_step, ho_history


def l1_refine(
    A: np.ndarray,
    B: np.ndarray,
    *,
    mode: str = "orthogonal",
    alpha: float = 1e8,
    dt: float = 1e-6,
    min_improvement: float = 5e-3,
    max_orth_error: float = 1e-5,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    mu_start: float | None = None,
    mu_min: float = 1e-6,
    holdout: float = 0.2,
    patience: int = 10,
    holdout_seed: int = 0,
    stride: int = 20,
    max_work: float | None = DEFAULT_MAX_WORK,
    backend: str = "auto",
    progress: ProgressFn | None = None,
) -> L1Result:
    """Orthogonal M minimising ‖A M − B‖₁ from M₀ = I: the reference flow, the flow on O(d), or Cayley descent (methods.md, "L1 refinement").

    ``holdout`` (fraction of the dictionary rows held out, default 0.2), ``patience`` (steps without a
    held-out improvement before stopping, default 10) and ``holdout_seed`` (the split's seed) apply to
    ``mode="orthogonal"`` only; ``holdout=0`` there means pure minimisation. ``mode="faithful"`` ignores
    them and runs the reference's flow and stopping rules on the whole dictionary; ``mode="flow"`` runs
    the same field and rules (``alpha``, ``dt``, ``min_improvement``, ``max_steps``) without the drift
    rule, ``stride`` output steps per Cayley step.
    ``loss_initial``/``loss_final`` are always the l1 loss of the whole dictionary (at I and at the returned M).
    ``max_work`` bounds every mode's cost in multiply-adds (see :data:`DEFAULT_MAX_WORK`; None: unbounded):
    a product that would overspend it is not run, the run stops with ``stop_reason="work_budget"`` and the M
    reached so far (every mode only accepts steps that lower its loss, so the l1 loss is never above the
    start's); ``work`` reports what was spent (≤ ``max_work``), plus a fixed few p × d × d products outside
    the budget for the reported losses. ``backend`` (services.alignment.dense_ops): where the p × d arrays
    live and their products run — ``"auto"`` torch on CUDA when a device exists, else numpy.
    """
    from services.alignment.dense_ops import ops

    if mode not in MODES:
        raise InvalidInput(f"unknown L1 mode {mode!r}; use one of {list(MODES)}", detail={"field": "mode"})
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    if A.shape != B.shape or A.ndim != 2 or len(A) == 0:
        raise InvalidInput(f"L1 refinement needs two aligned non-empty (p, d) arrays, got {A.shape} and {B.shape}")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise InvalidInput(f"L1 flow stride must be an integer >= 1, got {stride!r}", detail={"field": "stride"})
    if int(patience) < 1:
        raise InvalidInput(f"L1 early-stopping patience must be >= 1, got {patience}")
    if mu_start is not None and not float(mu_start) > 0:  # μ = 0 divides by zero residuals
        raise InvalidInput(f"L1 mu_start must be > 0, got {mu_start}", detail={"field": "mu_start"})
    if max_work is not None and not float(max_work) > 0:
        raise InvalidInput(f"L1 max_work must be > 0 (or null for no bound), got {max_work}",
                           detail={"field": "max_work"})
    xo = ops(backend)
    work = _Work(None if max_work is None else float(max_work))
    budget = None if max_work is None else float(max_work)
    with _blas_threads(1 if xo.name == "numpy" else None):
        return _refine(A, B, xo, work, budget, mode=mode, alpha=alpha, dt=dt, min_improvement=min_improvement,
                       max_orth_error=max_orth_error, max_steps=max_steps, max_seconds=max_seconds, mu_start=mu_start,
                       mu_min=mu_min, holdout=holdout, patience=patience, holdout_seed=holdout_seed, stride=stride,
                       progress=progress)


def _blas_threads(n: int | None):
    """BLAS limited to ``n`` threads inside the block (None: as it is). The refinement's products are small
    (p × d × d, d × d × d): on the busy 2-core box two OpenBLAS threads ran them at 0.6-2.7e9 multiply-adds/s,
    one at 4.9-12e9 (p = 1,000-8,000, d = 300), and one thread's rate is what the work budget is calibrated on."""
    from contextlib import nullcontext

    if n is None:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return nullcontext()
    return threadpool_limits(n, user_api="blas")


def _refine(A, B, xo, work, budget, *, mode, alpha, dt, min_improvement, max_orth_error, max_steps, max_seconds,
            mu_start, mu_min, holdout, patience, holdout_seed, stride, progress) -> L1Result:
    started = time.perf_counter()
    I = np.eye(A.shape[1])
    initial = l1_loss(A, B, I)
    if mode in ("faithful", "flow"):
        flow_args = dict(alpha=alpha, dt=dt, min_improvement=min_improvement, max_steps=max_steps or 5000,
                         max_seconds=max_seconds, progress=progress, work=work, xo=xo)
        if mode == "faithful":
            M, steps, reason, history = _faithful(xo.put(A), xo.put(B), max_orth_error=max_orth_error, **flow_args)
        else:
            M, steps, reason, history = _flow(xo.put(A), xo.put(B), stride=int(stride), **flow_args)
        return L1Result(M, initial, l1_loss(A, B, M), steps, reason, orthogonality_error(M),
                        time.perf_counter() - started, history, best_step=steps, fit_loss_initial=initial,
                        fit_loss_final=l1_loss(A, B, M), n_fit=len(A), work=work.spent, max_work=budget)
    fit, held = holdout_split(len(A), float(holdout), int(holdout_seed))
    A_fit, B_fit = A[fit], B[fit]
    A_ho, B_ho = (A[held], B[held]) if len(held) else (None, None)
    M, steps, reason, history, best_step, ho_history = _orthogonal(
        xo.put(A_fit), xo.put(B_fit), max_steps=max_steps or 2000, max_seconds=max_seconds, mu_start=mu_start,
        mu_min=mu_min, progress=progress, work=work, xo=xo, A_ho=None if A_ho is None else xo.put(A_ho),
        B_ho=None if B_ho is None else xo.put(B_ho), patience=int(patience))
    return L1Result(M, initial, l1_loss(A, B, M), steps, reason, orthogonality_error(M), time.perf_counter() - started,
                    history, best_step=best_step, fit_loss_initial=l1_loss(A_fit, B_fit, I),
                    fit_loss_final=l1_loss(A_fit, B_fit, M),
                    holdout_loss_initial=l1_loss(A_ho, B_ho, I) if A_ho is not None else None,
                    holdout_loss_final=l1_loss(A_ho, B_ho, M) if A_ho is not None else None,
                    n_fit=len(fit), n_holdout=len(held), holdout_history=ho_history, work=work.spent,
                    max_work=budget)
