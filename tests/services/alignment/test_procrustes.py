"""Procrustes, Kabsch and robust Procrustes recover planted rotations (methods.md, "Shared building blocks", "WALIP step 2")."""

import numpy as np
import pytest

from services.alignment.procrustes import (
    kabsch,
    orthogonality_error,
    procrustes,
    robust_procrustes,
)
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import (
    nn_accuracy,
    planted_world,
    random_rotation,
    unit,
)


def test_procrustes_recovers_noiseless_rotation_exactly():
    w = planted_world(n=800, d=32, noise=0.0, seed=1)
    W = procrustes(w.src.vectors[w.gold[:200, 0]], w.tgt.vectors[w.gold[:200, 1]])
    assert np.allclose(W, w.Q, atol=1e-5)
    assert orthogonality_error(W) < 1e-10
    assert nn_accuracy(w.src.vectors @ W, w.tgt.vectors, w.gold) == 1.0


def test_procrustes_on_noisy_data_stays_accurate():
    w = planted_world(n=1000, d=32, noise=0.3, seed=2)
    W = procrustes(w.src.vectors[w.gold[:300, 0]], w.tgt.vectors[w.gold[:300, 1]])
    assert nn_accuracy(w.src.vectors @ W, w.tgt.vectors, w.gold) > 0.9


def test_kabsch_returns_a_proper_rotation_even_for_a_reflection():
    rng = np.random.default_rng(3)
    A = unit(rng.standard_normal((300, 16)))
    R = random_rotation(16, rng)
    R[:, 0] *= -1 if np.linalg.det(R) > 0 else 1  # make it a reflection (det = −1)
    assert np.linalg.det(R) < 0
    W = kabsch(A, A @ R)
    assert np.linalg.det(W) == pytest.approx(1.0, abs=1e-8)
    assert np.linalg.det(procrustes(A, A @ R)) == pytest.approx(-1.0, abs=1e-8)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_robust_procrustes_beats_plain_with_30_percent_wrong_pairs(variant):
    w = planted_world(n=1000, d=32, noise=0.05, seed=4)
    rng = np.random.default_rng(5)
    seeds = w.gold[:200].copy()
    wrong = rng.choice(200, 60, replace=False)
    seeds[wrong, 1] = rng.integers(0, 1000, 60)
    A, B = w.src.vectors[seeds[:, 0]], w.tgt.vectors[seeds[:, 1]]
    W_plain = procrustes(A, B)
    W_robust, weights = robust_procrustes(A, B, variant=variant)
    err_plain = np.linalg.norm(W_plain - w.Q)
    err_robust = np.linalg.norm(W_robust - w.Q)
    assert err_robust < 0.5 * err_plain
    assert weights[wrong].mean() < weights[np.setdiff1d(np.arange(200), wrong)].mean()
    assert nn_accuracy(w.src.vectors @ W_robust, w.tgt.vectors, w.gold) >= nn_accuracy(w.src.vectors @ W_plain, w.tgt.vectors, w.gold)


def test_bad_shapes_and_unknown_variant_are_invalid_input():
    with pytest.raises(InvalidInput):
        procrustes(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(InvalidInput):
        robust_procrustes(np.ones((3, 4)), np.ones((3, 4)), variant="nope")


def test_multistep_mapping_puts_an_exactly_rotated_anisotropic_space_on_its_image():
    """Y = X R with X far from isotropic: whitening, mapping, re-weighting and de-whitening meet exactly."""
    from services.alignment.procrustes import multistep_mapping

    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 12)) * np.linspace(0.2, 3.0, 12)  # anisotropic: whitening matters
    R, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    Wx, Wz = multistep_mapping(X[:100], (X @ R)[:100])
    np.testing.assert_allclose(X @ Wx, X @ R @ Wz, atol=1e-8)
    # Without de-whitening both sides end whitened (identity covariance on the seed rows: Σ = I here).
    Wx_w, _ = multistep_mapping(X[:100], (X @ R)[:100], src_dewhiten=None, tgt_dewhiten=None)
    cov = (X[:100] @ Wx_w).T @ (X[:100] @ Wx_w)
    np.testing.assert_allclose(cov, np.eye(12), atol=1e-8)


def test_multistep_mapping_rejects_bad_options_and_rank_deficient_seeds():
    from services.alignment.procrustes import multistep_mapping

    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    with pytest.raises(InvalidInput, match="src_dewhiten"):
        multistep_mapping(A, B, src_dewhiten="both")
    with pytest.raises(InvalidInput, match="full-rank"):
        multistep_mapping(A[:4], B[:4])
