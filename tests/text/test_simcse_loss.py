"""SimCSE's loss against a slow direct implementation of the paper's eq. 4 and 5 (values and
gradients), and the per-process form against the full batch."""

from __future__ import annotations

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses.simcse import simcse_loss, simcse_loss_rows


def simcse_direct(h: torch.Tensor, hp: torch.Tensor, tau: float,
                  hn: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 / eq. 5 with loops: -log e^{sim(h_i,h_i+)/tau} / sum_j (e^{sim(h_i,h_j+)/tau}
    [+ e^{sim(h_i,h_j-)/tau}]), averaged over i."""

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.dot(u, v) / (torch.linalg.norm(u) * torch.linalg.norm(v))

    n = h.shape[0]
    total = 0.0
    for i in range(n):
        numerator = torch.exp(sim(h[i], hp[i]) / tau)
        denominator = 0.0
        for j in range(n):
            denominator = denominator + torch.exp(sim(h[i], hp[j]) / tau)
            if hn is not None:
                denominator = denominator + torch.exp(sim(h[i], hn[j]) / tau)
        total = total - torch.log(numerator / denominator)
    return total / n


@pytest.mark.parametrize("n,d,tau,negatives", [(2, 3, 0.5, False), (6, 8, 0.05, False),
                                               (5, 4, 0.1, True), (9, 16, 0.05, True)])
def test_value_and_gradients_match_the_paper(n: int, d: int, tau: float, negatives: bool) -> None:
    g = torch.Generator().manual_seed(n * 10 + d)
    tensors = [torch.randn(n, d, dtype=torch.float64, generator=g, requires_grad=True)
               for _ in range(3 if negatives else 2)]
    ours = simcse_loss(*tensors[:2], tau, tensors[2] if negatives else None)
    direct = simcse_direct(*tensors[:2], tau, tensors[2] if negatives else None)
    assert ours.item() == pytest.approx(direct.item(), rel=1e-9)
    for a, b in zip(torch.autograd.grad(ours, tensors), torch.autograd.grad(direct, tensors),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_tiled_equals_direct() -> None:
    g = torch.Generator().manual_seed(1)
    h, hp, hn = (torch.randn(20, 8, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(simcse_loss(h, hp, 0.05, hn, chunk_size=7),
                               simcse_loss(h, hp, 0.05, hn))


def test_two_ranks_average_to_the_full_batch() -> None:
    """Each rank's anchors against every rank's columns; the mean of the ranks' losses is the
    one-process loss of the whole batch."""
    g = torch.Generator().manual_seed(2)
    h, hp, hn = (torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3))
    full = simcse_loss(h, hp, 0.1, hn)
    ranks = [simcse_loss_rows(h[r * 4:(r + 1) * 4], hp, r * 4, 0.1, hn) for r in range(2)]
    torch.testing.assert_close((ranks[0] + ranks[1]) / 2, full)


def test_identical_orthogonal_pairs_give_the_closed_form() -> None:
    eye = torch.eye(4, dtype=torch.float64)
    expected = -math.log(math.exp(1 / 0.05) / (math.exp(1 / 0.05) + 3))
    assert simcse_loss(eye, eye, 0.05).item() == pytest.approx(expected, rel=1e-9)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        simcse_loss(torch.randn(3, 2), torch.randn(3, 2), 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        simcse_loss(torch.randn(1, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="same shape"):
        simcse_loss(torch.randn(3, 2), torch.randn(4, 2))
