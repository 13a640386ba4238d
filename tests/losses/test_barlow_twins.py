"""Barlow Twins against a slow, direct implementation of the paper's eq. (1)-(2)."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import BarlowTwinsLoss, barlow_twins_loss, cross_correlation
from contrastlab.losses.barlow_twins import scaled_off_diagonal_weight

EPS = 1e-5  # BatchNorm1d's eps, added to the biased variance as the paper's code does


def standardised_direct(z: torch.Tensor) -> list[list[torch.Tensor]]:
    """z_hat[b][i] = (z[b,i] - mean_i) / sqrt(var_i + eps), biased variance, with loops."""
    n, d = z.shape
    out = [[None] * d for _ in range(n)]
    for i in range(d):
        mean = sum(z[b, i] for b in range(n)) / n
        variance = sum((z[b, i] - mean) ** 2 for b in range(n)) / n
        for b in range(n):
            out[b][i] = (z[b, i] - mean) / torch.sqrt(variance + EPS)
    return out


def barlow_twins_direct(z1: torch.Tensor, z2: torch.Tensor, weight: float) -> torch.Tensor:
    n, d = z1.shape
    a, b = standardised_direct(z1), standardised_direct(z2)
    total = torch.zeros((), dtype=z1.dtype)
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k][i] * b[k][j] for k in range(n)) / n
            total = total + ((1 - c_ij) ** 2 if i == j else weight * c_ij**2)
    return total


def assert_value_and_gradient(ours, direct, inputs) -> None:
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(direct, inputs),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,d,weight", [(4, 3, 5e-3), (9, 5, 0.5), (16, 4, None), (6, 8, 0.0)])
def test_value_and_gradient_match_direct_formula(n: int, d: int, weight: float | None) -> None:
    generator = torch.Generator().manual_seed(n * 10 + d)
    z1 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    z2 = (0.5 * z1.detach() + torch.randn(n, d, dtype=torch.float64, generator=generator)
          ).requires_grad_()
    expected_weight = 1 / d if weight is None else weight
    assert_value_and_gradient(barlow_twins_loss(z1, z2, weight),
                              barlow_twins_direct(z1, z2, expected_weight), (z1, z2))


def test_lambda_scaled_to_the_projector_width() -> None:
    assert scaled_off_diagonal_weight(2048) == pytest.approx(1 / 2048)
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    torch.testing.assert_close(barlow_twins_loss(z1, z2),
                               barlow_twins_loss(z1, z2, 1 / 16))


def test_cross_correlation_is_a_correlation_matrix() -> None:
    torch.manual_seed(1)
    z = torch.randn(64, 6, dtype=torch.float64)
    c = cross_correlation(z, z)
    # identical views: C = the correlation matrix, unit diagonal (up to eps), entries in [-1, 1]
    torch.testing.assert_close(torch.diagonal(c), torch.ones(6, dtype=torch.float64), atol=1e-4,
                               rtol=0)
    assert c.abs().max() <= 1 + 1e-9
    torch.testing.assert_close(c, torch.corrcoef(z.t()), atol=1e-4, rtol=0)


def test_zero_for_identical_decorrelated_views_and_invariant_to_affine_maps() -> None:
    # zero-mean orthonormal columns scaled to unit variance: C = I / (1 + eps), loss ~ 4e-10
    a = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    q, _ = torch.linalg.qr(a - a.mean(dim=0))
    z = q * math.sqrt(32)
    assert barlow_twins_loss(z, z, 0.1).item() == pytest.approx(4 * (1 - 1 / (1 + EPS)) ** 2,
                                                                abs=1e-12)
    torch.manual_seed(2)
    z1, z2 = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 5, dtype=torch.float64)
    scale, shift = torch.rand(5, dtype=torch.float64) + 0.5, torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(barlow_twins_loss(z1, z2, 0.1),
                               barlow_twins_loss(z1 * scale + shift, z2, 0.1), atol=1e-6, rtol=1e-6)


def test_half_precision_is_computed_in_float32_and_errors() -> None:
    z = torch.randn(16, 8).to(torch.bfloat16).requires_grad_()
    loss = barlow_twins_loss(z, z.detach() + 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ConfigError, match="off_diagonal_weight"):
        BarlowTwinsLoss(off_diagonal_weight=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
    torch.testing.assert_close(BarlowTwinsLoss(0.3)(z.detach().float(), z.detach().float() + 1),
                               barlow_twins_loss(z.detach().float(), z.detach().float() + 1, 0.3))
