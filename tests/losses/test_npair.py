"""Multi-class N-pair loss against a slow, direct implementation of Sohn (2016)."""

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import NPairLoss, npair_loss


def npair_direct(f: torch.Tensor, f_plus: torch.Tensor, l2_weight: float) -> torch.Tensor:
    n = f.shape[0]
    total = torch.zeros((), dtype=f.dtype)
    for i in range(n):
        inner = sum(torch.exp(torch.dot(f[i], f_plus[j]) - torch.dot(f[i], f_plus[i]))
                    for j in range(n) if j != i)
        total = total + torch.log(1 + inner)
    penalty = sum(torch.dot(f[i], f[i]) + torch.dot(f_plus[i], f_plus[i]) for i in range(n))
    return total / n + l2_weight * penalty / (2 * n)


@pytest.mark.parametrize("n,d,l2_weight", [(2, 3, 0.002), (6, 4, 0.0), (9, 8, 0.1)])
def test_value_and_gradient_match_direct_formula(n: int, d: int, l2_weight: float) -> None:
    generator = torch.Generator().manual_seed(n + 100 * d)
    f = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    f_plus = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    ours = npair_loss(f, f_plus, l2_weight)
    direct = npair_direct(f, f_plus, l2_weight)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (f, f_plus)),
                    torch.autograd.grad(direct, (f, f_plus)), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_large_logits_stay_finite_and_errors() -> None:
    f = 100 * torch.randn(16, 8)
    loss = npair_loss(f, -f, 0.0)
    assert torch.isfinite(loss) and loss > 100
    with pytest.raises(ConfigError, match="l2_weight"):
        NPairLoss(l2_weight=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        npair_loss(torch.randn(1, 3), torch.randn(1, 3))
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(NPairLoss(0.01)(a, b), npair_loss(a, b, 0.01))
