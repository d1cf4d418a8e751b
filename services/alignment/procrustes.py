"""Orthogonal Procrustes, Kabsch and WALIP's robust Procrustes (methods.md, "Shared building blocks", "WALIP step 2").

Pure functions on aligned row matrices A, B (k × d): each returns W (d × d) mapping a source row x to x W.
Computed in float64 (SVD of a d × d matrix: cheap, and the orthogonality error stays ~1e-15).
"""

from __future__ import annotations

import numpy as np

from services.errors import InvalidInput

__all__ = ["kabsch", "multistep_mapping", "orthogonality_error", "procrustes", "robust_procrustes", "whitening"]


def _check_aligned(A: np.ndarray, B: np.ndarray) -> None:
    if A.ndim != 2 or B.ndim != 2 or A.shape != B.shape:
        raise InvalidInput(f"Procrustes needs two aligned (k, d) arrays of one shape, got {A.shape} and {B.shape}")
    if A.shape[0] == 0:
        raise InvalidInput("Procrustes needs at least one pair")


def procrustes(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """W = U Vᵀ with U Σ Vᵀ = SVD(Aᵀ B): argmin ‖A W − B‖_F over orthogonal W (methods.md, "Orthogonal Procrustes")."""
    _check_aligned(A, B)
    U, _, Vt = np.linalg.svd(np.asarray(A, np.float64).T @ np.asarray(B, np.float64))
    return U @ Vt


def kabsch(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Procrustes restricted to proper rotations: W = U diag(1, …, 1, sign det(U Vᵀ)) Vᵀ (methods.md, "Kabsch rotation")."""
    _check_aligned(A, B)
    U, _, Vt = np.linalg.svd(np.asarray(A, np.float64).T @ np.asarray(B, np.float64))
    if np.linalg.det(U @ Vt) < 0:
        U = U.copy()
        U[:, -1] = -U[:, -1]
    return U @ Vt


def robust_procrustes(
    A: np.ndarray,
    B: np.ndarray,
    *,
    n_iter: int = 5,
    eps: float = 1e-3,
    variant: str = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """Error-weighted Procrustes, WALIP Algorithm 1 (methods.md, "WALIP step 2"): (W, final row weights).

    ``variant="paper"``: W₀ = Procrustes(A, B); ``n_iter`` times: r_i = ‖b_i − a_i W‖, α_i = 1/(r_i + ε),
    α ← α / max α, W = Procrustes(D A, D B) with D = diag(√α) on the ORIGINAL rows.
    ``variant="code"`` (authors' release): 2 rounds, squared residual, and the rows are re-scaled by each
    round's D in turn, so the weights compound.
    """
    _check_aligned(A, B)
    if variant not in ("paper", "code"):
        raise InvalidInput(f"unknown robust Procrustes variant {variant!r}; use 'paper' or 'code'")
    A64 = np.asarray(A, np.float64)
    B64 = np.asarray(B, np.float64)
    W = procrustes(A64, B64)
    weights = np.ones(len(A64))
    rounds = n_iter if variant == "paper" else 2
    Aw, Bw = A64, B64
    for _ in range(rounds):
        if variant == "paper":
            r = np.linalg.norm(B64 - A64 @ W, axis=1)
            alpha = 1.0 / (r + eps)
            alpha /= alpha.max()
            weights = alpha
            D = np.sqrt(alpha)[:, None]
            W = procrustes(D * A64, D * B64)
        else:
            r = np.sum((Bw - Aw @ W) ** 2, axis=1)
            alpha = 1.0 / (r + eps)
            alpha /= alpha.max()
            weights = weights * alpha
            D = np.sqrt(alpha)[:, None]
            Aw, Bw = D * Aw, D * Bw
            W = procrustes(Aw, Bw)
    return W, weights


def whitening(A: np.ndarray) -> np.ndarray:
    """(AᵀA)^(-1/2) from the SVD of A (k × d, k ≥ d): rows of A W have identity covariance."""
    A = np.asarray(A, np.float64)
    _, s, Vt = np.linalg.svd(A, full_matrices=False)
    if A.shape[0] < A.shape[1] or s.min() <= 1e-10 * s.max():
        raise InvalidInput("whitening needs a full-rank seed matrix: fewer independent seed pairs than dimensions")
    return (Vt.T / s) @ Vt


def multistep_mapping(
    A: np.ndarray, B: np.ndarray, *, src_reweight: float = 0.5, tgt_reweight: float = 0.5,
    src_dewhiten: str | None = "src", tgt_dewhiten: str | None = "tgt",
) -> tuple[np.ndarray, np.ndarray]:
    """Supervised multi-step framework of Artetxe, Labaka & Agirre (AAAI 2018; VecMap ``--supervised``).

    Not one of the five methods of methods.md: the strongest classic supervised baseline, kept so the
    refiners (L1, InstaMap) can start from it, as the L1 paper does (methods.md, "L1 refinement":
    the reference was measured on VecMap-supervised vectors). On the seed rows A (source) and B (target):
    (1) whitening W₁ = (AᵀA)^(-1/2), Z₁ = (BᵀB)^(-1/2); (2) orthogonal mapping U Σ Vᵀ = SVD((A W₁)ᵀ B Z₁),
    source by U, target by V; (3) re-weighting by Σ^src_reweight and Σ^tgt_reweight; (4) de-whitening
    by Uᵀ W₁⁻¹ U (``"src"``) or Vᵀ Z₁⁻¹ V (``"tgt"``) on each side (``None``: none). VecMap's supervised
    defaults are the defaults here. Returns (Wx, Wz): both spaces move, x ↦ x Wx and y ↦ y Wz.
    """
    _check_aligned(A, B)
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    Wx1, Wz1 = whitening(A), whitening(B)
    U, sigma, Vt = np.linalg.svd((A @ Wx1).T @ (B @ Wz1))
    V = Vt.T
    dewhiten = {"src": U.T @ np.linalg.inv(Wx1) @ U, "tgt": V.T @ np.linalg.inv(Wz1) @ V, None: None}
    for name, value in (("src_dewhiten", src_dewhiten), ("tgt_dewhiten", tgt_dewhiten)):
        if value not in dewhiten:
            raise InvalidInput(f"{name} must be 'src', 'tgt' or None, got {value!r}", detail={"field": name})
    Wx = Wx1 @ U * sigma ** float(src_reweight)
    Wz = Wz1 @ V * sigma ** float(tgt_reweight)
    if src_dewhiten is not None:
        Wx = Wx @ dewhiten[src_dewhiten]
    if tgt_dewhiten is not None:
        Wz = Wz @ dewhiten[tgt_dewhiten]
    return Wx, Wz


def orthogonality_error(W: np.ndarray) -> float:
    """max |W Wᵀ − I| (the L1 reference's drift criterion)."""
    W = np.asarray(W, np.float64)
    return float(np.abs(W @ W.T - np.eye(W.shape[0])).max())
