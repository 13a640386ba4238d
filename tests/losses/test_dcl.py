"""DCL and DCLW against a slow, direct implementation of Yeh et al.'s definitions."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import DCLLoss, dcl_loss, dclw_loss, dclw_weights, nt_xent


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (torch.linalg.norm(u) * torch.linalg.norm(v))


def weights_direct(z1: torch.Tensor, z2: torch.Tensor, sigma: float) -> list[torch.Tensor]:
    """w_n = 2 - exp(<z1_n, z2_n>/sigma) / E_m[exp(<z1_m, z2_m>/sigma)], normalised vectors."""
    n = z1.shape[0]
    expectation = sum(torch.exp(cosine(z1[m], z2[m]) / sigma) for m in range(n)) / n
    return [2 - torch.exp(cosine(z1[k], z2[k]) / sigma) / expectation for k in range(n)]


def dcl_direct(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
               sigma: float | None) -> torch.Tensor:
    n = z1.shape[0]
    views = [z1[k] for k in range(n)] + [z2[k] for k in range(n)]
    weights = weights_direct(z1, z2, sigma) if sigma is not None else [1.0] * n
    total = torch.zeros((), dtype=z1.dtype)
    for i in range(2 * n):
        j = i + n if i < n else i - n  # the other view of the same image
        positive = weights[i % n] * cosine(views[i], views[j]) / temperature
        negatives = sum(torch.exp(cosine(views[i], views[k]) / temperature)
                        for k in range(2 * n) if k != i and k != j)
        total = total - positive + torch.log(negatives)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,temperature,sigma", [
    (2, 3, 0.1, None), (5, 4, 0.5, None), (8, 6, 0.1, 0.5), (3, 5, 0.2, 1.5), (6, 16, 1.0, 0.1),
])
def test_value_and_gradient_match_direct_formula(n, d, temperature, sigma) -> None:
    generator = torch.Generator().manual_seed(n * 31 + d)
    z1 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    ours = dcl_loss(z1, z2, temperature, sigma)
    direct = dcl_direct(z1, z2, temperature, sigma)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(direct, (z1, z2)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dclw_weights_average_one_and_favour_hard_positives() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(10, 8, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)
    z2[0] = z1[0]  # an easy (identical) positive pair
    w = dclw_weights(z1, z2, 0.5)
    assert w.mean().item() == pytest.approx(1.0)
    assert w.argmin().item() == 0
    torch.testing.assert_close(w, torch.stack(weights_direct(z1, z2, 0.5)))
    torch.testing.assert_close(dclw_loss(z1, z2, 0.1, 0.5), dcl_loss(z1, z2, 0.1, 0.5))


def test_positive_removed_from_the_denominator() -> None:
    # NT-Xent's term per anchor is -s/T + log(e^{s/T} + negatives) > DCL's -s/T + log(negatives)
    torch.manual_seed(1)
    z1, z2 = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    assert dcl_loss(z1, z2, 0.5) < nt_xent(z1, z2, 0.5)
    # two identical orthogonal pairs: positive cos 1, the 2 negatives cos 0 -> -1/T + log 2
    eye = torch.eye(2, dtype=torch.float64)
    assert dcl_loss(eye, eye, 0.1).item() == pytest.approx(-10 + math.log(2))


def test_stable_in_low_precision_and_errors() -> None:
    z1 = torch.randn(32, 16).to(torch.bfloat16).requires_grad_()
    loss = dclw_loss(z1, z1.detach() + 0.01, 0.01)
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ConfigError, match="weight_sigma"):
        DCLLoss(weight_sigma=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        dcl_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        dcl_loss(torch.randn(1, 3), torch.randn(1, 3))
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(DCLLoss(0.2, 0.5)(a, b), dclw_loss(a, b, 0.2, 0.5))
