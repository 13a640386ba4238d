"""NT-Xent against a slow, direct implementation of SimCLR's Algorithm 1."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import NTXentLoss, nt_xent


def nt_xent_direct(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Algorithm 1 written out with loops: views interleaved as (2k-1, 2k), l(i,j) per anchor."""
    n = z1.shape[0]
    views = []
    for k in range(n):
        views += [z1[k], z2[k]]

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.dot(u, v) / (torch.linalg.norm(u) * torch.linalg.norm(v))

    def ell(i: int, j: int) -> torch.Tensor:
        numerator = torch.exp(sim(views[i], views[j]) / temperature)
        denominator = sum(
            torch.exp(sim(views[i], views[k]) / temperature) for k in range(2 * n) if k != i
        )
        return -torch.log(numerator / denominator)

    total = sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n))
    return total / (2 * n)


@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0), (7, 32, 0.07)])
def test_value_and_gradient_match_direct_formula(n: int, d: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    ours = nt_xent(z1, z2, temperature)
    direct = nt_xent_direct(z1, z2, temperature)
    assert ours.item() == pytest.approx(direct.item(), abs=1e-5, rel=1e-5)
    g_ours = torch.autograd.grad(ours, (z1, z2))
    g_direct = torch.autograd.grad(direct, (z1, z2))
    for a, b in zip(g_ours, g_direct, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


def test_perfect_alignment_lower_than_random() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    aligned = nt_xent(z, z.clone(), 0.1)
    shuffled = nt_xent(z, z[torch.randperm(32)], 0.1)
    assert aligned < shuffled
    # with identical, orthogonal views the loss tends to log(1 + (2N-2) e^{-1/tau}) -> near 0
    # identical, mutually orthogonal views: l = -log(e^{1/tau} / (e^{1/tau} + (2N - 2) e^0))
    eye = torch.eye(8, dtype=torch.float64)
    assert nt_xent(eye, eye, 0.1).item() == pytest.approx(
        -math.log(math.exp(10) / (math.exp(10) + 14)), rel=1e-9
    )


def test_invariant_to_scale_of_projections() -> None:
    torch.manual_seed(1)
    z1, z2 = torch.randn(10, 6), torch.randn(10, 6)
    torch.testing.assert_close(nt_xent(z1, z2, 0.3), nt_xent(5 * z1, 0.2 * z2, 0.3))


def test_symmetric_in_the_two_views() -> None:
    torch.manual_seed(2)
    z1, z2 = torch.randn(9, 5), torch.randn(9, 5)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5), nt_xent(z2, z1, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stable_at_low_temperature(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    z1 = torch.randn(64, 32).to(dtype).requires_grad_()
    z2 = (z1.detach() + 0.01 * torch.randn(64, 32).to(dtype)).requires_grad_()
    loss = nt_xent(z1, z2, 0.01)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    # the naive exp(s/tau) of the direct form overflows float32 here (e^100); ours must agree
    # with the float64 direct value
    reference = nt_xent_direct(z1.detach().double()[:8], z2.detach().double()[:8], 0.01)
    ours_small = nt_xent(z1.detach()[:8], z2.detach()[:8], 0.01)
    tolerance = 0.05 if dtype == torch.bfloat16 else 1e-4
    assert ours_small.item() == pytest.approx(reference.item(), abs=tolerance)


def test_float32_matches_float64() -> None:
    torch.manual_seed(4)
    z1, z2 = torch.randn(20, 12, dtype=torch.float64), torch.randn(20, 12, dtype=torch.float64)
    assert nt_xent(z1.float(), z2.float(), 0.2).item() == pytest.approx(
        nt_xent_direct(z1, z2, 0.2).item(), abs=1e-5
    )


def test_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), -0.1)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 3), torch.randn(1, 3), 0.5)
    with pytest.raises(ConfigError):
        NTXentLoss(0.0)


def test_module_wrapper() -> None:
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(NTXentLoss(0.4)(z1, z2), nt_xent(z1, z2, 0.4))
