"""VICReg against a slow, direct implementation of the paper's three terms."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import VICRegLoss, vicreg_loss, vicreg_terms


def terms_direct(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4):
    n, d = z1.shape
    invariance = sum((z1[b, j] - z2[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def variance_and_covariance(z):
        mean = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
        cov = [[sum((z[b, i] - mean[i]) * (z[b, j] - mean[j]) for b in range(n)) / (n - 1)
                for j in range(d)] for i in range(d)]
        v = sum(torch.clamp(gamma - torch.sqrt(cov[j][j] + eps), min=0) for j in range(d)) / d
        c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return v, c

    v1, c1 = variance_and_covariance(z1)
    v2, c2 = variance_and_covariance(z2)
    return invariance, v1 + v2, c1 + c2


@pytest.mark.parametrize("n,d,weights", [(4, 3, (25.0, 25.0, 1.0)), (10, 5, (1.0, 2.0, 3.0)),
                                         (7, 6, (25.0, 25.0, 1.0))])
def test_value_and_gradient_match_direct_formula(n: int, d: int, weights) -> None:
    generator = torch.Generator().manual_seed(n + d)
    # small scale so that some dimensions have std < gamma (the hinge is active) and some not
    scale = torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    z1 = (torch.randn(n, d, dtype=torch.float64, generator=generator) * scale).requires_grad_()
    z2 = (torch.randn(n, d, dtype=torch.float64, generator=generator) * scale).requires_grad_()
    s, v, c = terms_direct(z1, z2)
    direct = weights[0] * s + weights[1] * v + weights[2] * c
    ours = vicreg_loss(z1, z2, *weights)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(direct, (z1, z2)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for ours_term, direct_term in zip(vicreg_terms(z1, z2), (s, v, c), strict=True):
        torch.testing.assert_close(ours_term, direct_term.detach(), atol=1e-5, rtol=1e-5)


def test_terms_behave_as_described() -> None:
    torch.manual_seed(0)
    z = torch.randn(256, 4, dtype=torch.float64)
    # collapsed embeddings: variance term at its maximum 2 (gamma - sqrt(eps)), no covariance
    constant = torch.ones(8, 4, dtype=torch.float64)
    terms = vicreg_terms(constant, constant)
    assert terms.variance.item() == pytest.approx(2 * (1 - math.sqrt(1e-4)))
    assert terms.invariance.item() == 0 and terms.covariance.item() == 0
    # well spread, independent dimensions (std 3 > gamma): no variance penalty
    terms = vicreg_terms(3 * z, 3 * z)
    assert terms.variance.item() == 0 and terms.invariance.item() == 0
    # perfectly correlated dimensions are penalised by the covariance term
    correlated = z[:, :1].repeat(1, 4)
    assert vicreg_terms(correlated, correlated).covariance > 10 * vicreg_terms(z, z).covariance


def test_half_precision_and_errors() -> None:
    z = torch.randn(16, 8).to(torch.bfloat16).requires_grad_()
    loss = vicreg_loss(z, z.detach() + 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ConfigError, match="variance_weight"):
        VICRegLoss(variance_weight=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_loss(torch.randn(1, 3), torch.randn(1, 3))
    a, b = torch.randn(6, 3), torch.randn(6, 3)
    torch.testing.assert_close(VICRegLoss(1.0, 2.0, 3.0)(a, b), vicreg_loss(a, b, 1.0, 2.0, 3.0))
