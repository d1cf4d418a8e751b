"""L1 refinement: orthogonal M minimising ‖A M − B‖₁ on a mutual CSLS dictionary (methods.md, "L1 refinement").

Two solvers, both starting at M₀ = I on the already aligned spaces and both returning the best M seen
(so the l1 loss never rises):

- ``mode="faithful"``: the reference's tangent-space flow dM/dt = −π(∇) with ∇ = Aᵀ(tanh Z + Z ⊙ sech² Z),
  Z = α(A M − B), α = 1e8, integrated with SciPy VODE (BDF, order 15 as passed by the reference, rtol 1e-5,
  atol 1e-7, functional iteration) in output steps of 1e-6; stops when a step improves the loss by less
  than 5e-3 or worsens it, when max|M Mᵀ − I| > 1e-5, or after 5000 steps; keeps the last accepted M.
- ``mode="orthogonal"`` (ours): Riemannian gradient descent on O(d) with Cayley-map steps
  M ← M (I + η/2 Ω)⁻¹ (I − η/2 Ω), Ω = Mᵀ G − Gᵀ M skew, on the smoothed loss Σ √(r² + μ²)
  (μ halved whenever progress stalls: continuation towards the exact l1), Armijo backtracking line search.
  Cayley steps keep M orthogonal to rounding (re-projected by polar decomposition every 50 steps), so
  the descent never has to stop for drift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from services.alignment.procrustes import orthogonality_error
from services.errors import InvalidInput

__all__ = ["l1_loss", "l1_dictionary", "l1_refine", "L1Result", "tangent_projection"]

ProgressFn = Callable[[str, int, int, dict], None]


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


def l1_loss(A: np.ndarray, B: np.ndarray, M: np.ndarray) -> float:
    """‖A M − B‖₁ (sum of absolute residuals)."""
    return float(np.abs(A @ M - B).sum())


def l1_dictionary(XW: np.ndarray, Y: np.ndarray, *, max_vocab: int = 10000, knn: int = 10) -> np.ndarray:
    """Mutual CSLS-10 nearest neighbours (S2T & T2S) over the ``max_vocab`` most frequent words (methods.md, "L1 refinement")."""
    from services.alignment.retrieval import mutual_nn

    pairs, _ = mutual_nn(XW, Y, retrieval="csls", knn=knn, max_src=max_vocab, max_tgt=max_vocab)
    return pairs


def tangent_projection(M: np.ndarray, G: np.ndarray) -> np.ndarray:
    """π(∇) = ½ M (Mᵀ∇ − ∇ᵀM) + (I − M Mᵀ) ∇ (methods.md, "L1 refinement")."""
    MtG = M.T @ G
    return 0.5 * M @ (MtG - MtG.T) + G - M @ (M.T @ G)


def _smoothed_sign_gradient(A: np.ndarray, B: np.ndarray, M: np.ndarray, alpha: float) -> np.ndarray:
    Z = alpha * (A @ M - B)
    Zc = np.clip(Z, -300.0, 300.0)
    sech2 = 1.0 / np.cosh(Zc) ** 2
    return A.T @ (np.tanh(Zc) + Z * sech2)


def _faithful(A, B, *, alpha, dt, min_improvement, max_orth_error, max_steps, max_seconds, progress):
    from scipy.integrate import ode

    d = A.shape[1]

    def rhs(_t, m):
        M = m.reshape(d, d)
        return -tangent_projection(M, _smoothed_sign_gradient(A, B, M, alpha)).ravel()

    solver = ode(rhs).set_integrator("vode", method="bdf", order=15, rtol=1e-5, atol=1e-7, with_jacobian=False)
    M = np.eye(d)
    solver.set_initial_value(M.ravel(), 0.0)
    loss = l1_loss(A, B, M)
    history = [loss]
    started = time.perf_counter()
    reason = "max_steps"
    steps = 0
    for step in range(1, max_steps + 1):
        m_new = solver.integrate(solver.t + dt)
        if not solver.successful():
            reason = "integrator_failed"
            break
        M_new = m_new.reshape(d, d)
        if orthogonality_error(M_new) > max_orth_error:
            reason = "orthogonality_drift"
            break
        new_loss = l1_loss(A, B, M_new)
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


def _cayley(Omega: np.ndarray, eta: float) -> np.ndarray:
    d = Omega.shape[0]
    half = 0.5 * eta * Omega
    return np.linalg.solve(np.eye(d) + half, np.eye(d) - half)


def _polar(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    return U @ Vt


def _orthogonal(A, B, *, max_steps, max_seconds, mu_start, mu_min, progress):
    d = A.shape[1]
    M = np.eye(d)
    R = A - B
    true = float(np.abs(R).sum())
    best_M, best_loss = M.copy(), true
    history = [true]
    mu = mu_start if mu_start is not None else max(float(np.median(np.abs(R))) * 0.5, 1e-6)

    def smooth(Rm, mu_):
        return float(np.sqrt(Rm * Rm + mu_ * mu_).sum())

    f = smooth(R, mu)
    eta = None
    started = time.perf_counter()
    reason = "max_steps"
    steps = 0
    stall_f = f
    for step in range(1, max_steps + 1):
        G = A.T @ (R / np.sqrt(R * R + mu * mu))
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
            M_try = M @ _cayley(Omega, eta)
            R_try = A @ M_try - B
            f_try = smooth(R_try, mu)
            if f_try <= f - 1e-4 * eta * 0.5 * gnorm2:
                accepted = True
                break
            eta *= 0.5
        if accepted:
            M, R, f = M_try, R_try, f_try
            eta *= 1.6
            if step % 50 == 0:
                M = _polar(M)
                R = A @ M - B
                f = smooth(R, mu)
            true = float(np.abs(R).sum())
            if true < best_loss:
                best_M, best_loss = M.copy(), true
        steps = step
        history.append(true)
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
            progress("l1", step, max_steps, {"loss": true, "mu": mu})
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            reason = "time_budget"
            break
    return best_M, steps, reason, history


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
    progress: ProgressFn | None = None,
) -> L1Result:
    """Orthogonal M minimising ‖A M − B‖₁ from M₀ = I, by the reference flow or by Cayley descent (methods.md, "L1 refinement")."""
    if mode not in ("faithful", "orthogonal"):
        raise InvalidInput(f"unknown L1 mode {mode!r}; use 'faithful' or 'orthogonal'")
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    if A.shape != B.shape or A.ndim != 2 or len(A) == 0:
        raise InvalidInput(f"L1 refinement needs two aligned non-empty (p, d) arrays, got {A.shape} and {B.shape}")
    started = time.perf_counter()
    initial = l1_loss(A, B, np.eye(A.shape[1]))
    if mode == "faithful":
        M, steps, reason, history = _faithful(A, B, alpha=alpha, dt=dt, min_improvement=min_improvement,
                                              max_orth_error=max_orth_error, max_steps=max_steps or 5000,
                                              max_seconds=max_seconds, progress=progress)
    else:
        M, steps, reason, history = _orthogonal(A, B, max_steps=max_steps or 2000, max_seconds=max_seconds,
                                                mu_start=mu_start, mu_min=mu_min, progress=progress)
    return L1Result(M, initial, l1_loss(A, B, M), steps, reason, orthogonality_error(M),
                    time.perf_counter() - started, history)
