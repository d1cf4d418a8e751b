"""Globetrotter's transitive similarity and text loss against hand-computed values (section 3.2-3.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.globetrotter import margin_clip, text_loss, transitive_alpha


def test_margin_clip():
    x = torch.tensor([-0.5, 0.0, 0.4, 0.55, 1.0])
    assert margin_clip(x).tolist() == pytest.approx([0.0, 0.0, 0.0, 0.25, 1.0])


def test_alpha_hand_computed_with_margin_clipping():
    own = torch.tensor([0.9, 0.5, 0.2])
    visual = torch.tensor([[1.0, 0.8, 0.5],
                           [0.8, 1.0, -0.6],
                           [0.5, -0.6, 1.0]])
    alpha = transitive_alpha(own, visual, margin=0.4)
    # (0.9 * 0.8 * 0.5)^(1/3) = 0.36^(1/3) = 0.71138 -> (0.71138 - 0.4) / 0.6
    assert alpha[0, 1].item() == pytest.approx((0.36 ** (1 / 3) - 0.4) / 0.6, abs=1e-6)
    assert alpha[0, 1].item() == pytest.approx(0.51897, abs=1e-4)
    # (0.9 * 0.5 * 0.2)^(1/3) = 0.448 -> just over the margin
    assert alpha[0, 2].item() == pytest.approx((0.09 ** (1 / 3) - 0.4) / 0.6, abs=1e-6)
    # (0.5 * -0.6 * 0.2) < 0: a negative cube root, clipped to 0
    assert alpha[1, 2].item() == 0.0 and alpha[2, 1].item() == 0.0
    # (0.2 * 1.0 * 0.2)^(1/3) = 0.342 < 0.4: clipped
    assert alpha[2, 2].item() == 0.0
    # (0.9 * 1 * 0.9)^(1/3) = 0.932
    assert alpha[0, 0].item() == pytest.approx((0.81 ** (1 / 3) - 0.4) / 0.6, abs=1e-6)
    assert torch.allclose(alpha, alpha.T)
    # a different margin moves the cut
    assert transitive_alpha(own, visual, margin=0.0)[2, 2].item() == pytest.approx(0.04 ** (1 / 3), abs=1e-6)


def test_text_loss_hand_computed():
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    alpha = torch.tensor([[0.0, 0.5, 0.0],
                          [0.5, 0.0, 0.2],
                          [0.0, 0.2, 0.0]])
    tau = 0.1
    beta = (z @ z.T).numpy() / tau
    expected = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        logz = math.log(sum(math.exp(beta[i, j]) for j in others))
        expected -= sum(alpha[i, j].item() * (beta[i, j] - logz) for j in others)
    assert text_loss(z, alpha, tau).item() == pytest.approx(expected / 3, rel=1e-5)
    # the diagonal never counts, whatever alpha says there
    assert text_loss(z, alpha + torch.eye(3), tau).item() == pytest.approx(expected / 3, rel=1e-5)


def test_text_loss_pulls_positives_together():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    alpha = torch.zeros(6, 6)
    alpha[0, 1] = alpha[1, 0] = 1.0
    opt = torch.optim.SGD([z], lr=0.1)
    before = torch.nn.functional.cosine_similarity(z[0], z[1], dim=0).item()
    for _ in range(50):
        opt.zero_grad()
        text_loss(torch.nn.functional.normalize(z, dim=1), alpha, 0.1).backward()
        opt.step()
    assert torch.nn.functional.cosine_similarity(z[0], z[1], dim=0).item() > max(0.8, before + 0.5)
