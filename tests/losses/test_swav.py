"""SwAV's Sinkhorn-Knopp codes and swapped prediction loss against direct implementations."""

from __future__ import annotations

import math

import pytest
import torch

import contrastlab.losses.swav as swav_module
from contrastlab.errors import ConfigError
from contrastlab.losses import SwappedPredictionLoss, sinkhorn_knopp, swapped_prediction_loss


def sinkhorn_direct(scores: list[list[float]], epsilon: float, iterations: int) -> torch.Tensor:
    """Caron et al. 2020, Algorithm 1, element by element in Python floats (K x B matrix Q)."""
    b_count, k_count = len(scores), len(scores[0])
    q = [[math.exp(scores[b][k] / epsilon) for b in range(b_count)] for k in range(k_count)]
    total = sum(sum(row) for row in q)
    q = [[value / total for value in row] for row in q]
    for _ in range(iterations):
        for k in range(k_count):  # rows (prototypes) to 1/K
            row_sum = sum(q[k])
            q[k] = [value / row_sum / k_count for value in q[k]]
        for b in range(b_count):  # columns (samples) to 1/B
            column_sum = sum(q[k][b] for k in range(k_count))
            for k in range(k_count):
                q[k][b] = q[k][b] / column_sum / b_count
    return torch.tensor([[q[k][b] * b_count for k in range(k_count)] for b in range(b_count)],
                        dtype=torch.float64)


def swapped_direct(scores: torch.Tensor, codes: torch.Tensor, tau: float) -> torch.Tensor:
    """mean over s (coded), t != s and samples of -sum_k q_s^(k) log softmax(z_t . c / tau)^(k)."""
    num_views, batch, k_count = scores.shape
    total = torch.zeros((), dtype=scores.dtype)
    pairs = 0
    for s in range(codes.shape[0]):
        for t in range(num_views):
            if t == s:
                continue
            pairs += 1
            for b in range(batch):
                denominator = sum(torch.exp(scores[t, b, j] / tau) for j in range(k_count))
                for k in range(k_count):
                    p = torch.exp(scores[t, b, k] / tau) / denominator
                    total = total - codes[s, b, k] * torch.log(p)
    return total / (pairs * batch)


def cosine_scores(batch: int, k: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64),
                                      dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, dim, generator=gen, dtype=torch.float64),
                                      dim=1)
    return z @ c.t()


@pytest.mark.parametrize("batch,k,iterations,epsilon", [(5, 4, 3, 0.05), (7, 3, 1, 0.1),
                                                        (4, 9, 5, 0.05), (6, 6, 3, 0.5)])
def test_codes_match_direct_algorithm(batch: int, k: int, iterations: int, epsilon: float) -> None:
    scores = cosine_scores(batch, k, seed=batch * 10 + k)
    ours = sinkhorn_knopp(scores, epsilon, iterations)
    direct = sinkhorn_direct(scores.tolist(), epsilon, iterations)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)


def test_marginals_each_sample_sums_to_one_each_prototype_gets_equal_mass() -> None:
    batch, k = 12, 4
    scores = cosine_scores(batch, k, seed=3)
    few = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(few.sum(dim=1), torch.ones(batch, dtype=torch.float64))
    assert (few >= 0).all()
    converged = sinkhorn_knopp(scores, 0.05, 2000)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(batch, dtype=torch.float64))
    torch.testing.assert_close(converged.sum(dim=0),
                               torch.full((k,), batch / k, dtype=torch.float64),
                               atol=1e-6, rtol=1e-6)


def test_codes_have_the_scaling_form_of_the_transport_solution() -> None:
    # Q = diag(u) exp(S / eps) diag(v): log Q - S / eps = a_b + c_k (rank-one additive structure)
    scores = cosine_scores(6, 5, seed=4)
    m = torch.log(sinkhorn_knopp(scores, 0.05, 3)) - scores / 0.05
    interaction = m - m[:, :1] - m[:1, :] + m[:1, :1]
    torch.testing.assert_close(interaction, torch.zeros_like(m), atol=1e-8, rtol=0)


def test_codes_take_no_gradient_and_handle_half_precision() -> None:
    scores = cosine_scores(8, 5).float().requires_grad_()
    codes = sinkhorn_knopp(scores)
    assert not codes.requires_grad
    half = sinkhorn_knopp(scores.detach().bfloat16())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(half, codes, atol=0.05, rtol=0.05)


def test_small_epsilon_and_large_scores_stay_finite() -> None:
    # exp(score / eps) over- or underflows float32 here (scores / eps spans about +-1000)
    scores = 50 * cosine_scores(8, 5)
    codes = sinkhorn_knopp(scores.float(), 0.05, 3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(8))
    # and a small epsilon still matches the algorithm computed in Python floats
    scores = cosine_scores(5, 4, seed=6)
    torch.testing.assert_close(sinkhorn_knopp(scores, 0.005, 3),
                               sinkhorn_direct(scores.tolist(), 0.005, 3), atol=1e-5, rtol=1e-5)


def test_sums_are_reduced_over_ranks(monkeypatch: pytest.MonkeyPatch, two_ranks) -> None:
    """Two simulated ranks with half the batch each give the codes of the whole batch."""
    ranks = two_ranks
    monkeypatch.setattr(swav_module, "all_reduce_sum", ranks.all_reduce_sum)
    monkeypatch.setattr(swav_module, "_all_reduce_max", ranks.all_reduce_max)
    monkeypatch.setattr(swav_module, "world_size", ranks.world_size)
    scores = cosine_scores(10, 4, seed=5)
    halves = ranks.run(lambda s: sinkhorn_knopp(s, 0.05, 3), [scores[:5], scores[5:]])
    monkeypatch.undo()
    torch.testing.assert_close(torch.cat(halves), sinkhorn_knopp(scores, 0.05, 3))


@pytest.mark.parametrize("views,coded,batch,k,tau", [(2, 2, 3, 4, 0.1), (5, 2, 2, 3, 0.1),
                                                     (4, 1, 3, 5, 0.5)])
def test_swapped_loss_value_and_gradient(views: int, coded: int, batch: int, k: int,
                                         tau: float) -> None:
    gen = torch.Generator().manual_seed(views * 100 + k)
    scores = torch.randn(views, batch, k, dtype=torch.float64, generator=gen, requires_grad=True)
    codes = torch.softmax(torch.randn(coded, batch, k, dtype=torch.float64, generator=gen), -1)
    ours = swapped_prediction_loss(scores, codes, tau)
    direct = swapped_direct(scores, codes, tau)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours, scores)
    (g_direct,) = torch.autograd.grad(direct, scores)
    torch.testing.assert_close(g_ours, g_direct, atol=1e-5, rtol=1e-5)


def test_two_views_is_the_papers_symmetric_swap() -> None:
    # L(z1, z2) = l(z1, q2) + l(z2, q1), averaged: (l(z1, q2) + l(z2, q1)) / 2
    gen = torch.Generator().manual_seed(7)
    scores = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    codes = torch.softmax(torch.randn(2, 4, 3, dtype=torch.float64, generator=gen), -1)

    def ell(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return -(q * torch.log_softmax(z / 0.1, dim=-1)).sum(-1).mean()

    expected = (ell(scores[0], codes[1]) + ell(scores[1], codes[0])) / 2
    torch.testing.assert_close(swapped_prediction_loss(scores, codes, 0.1), expected)


def test_codes_receive_no_gradient() -> None:
    scores = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 4, 5, dtype=torch.float64), -1).requires_grad_()
    swapped_prediction_loss(scores, codes).backward()
    assert codes.grad is None and scores.grad is not None


def test_module_computes_codes_of_the_global_views() -> None:
    gen = torch.Generator().manual_seed(8)
    scores = torch.randn(4, 6, 5, dtype=torch.float64, generator=gen).tanh().requires_grad_()
    loss = SwappedPredictionLoss(0.1, 0.05, 3, num_coded=2)(scores)
    codes = torch.stack([sinkhorn_direct(scores[s].tolist(), 0.05, 3) for s in range(2)])
    direct = swapped_direct(scores, codes, 0.1)
    torch.testing.assert_close(loss, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(loss, scores)[0],
                               torch.autograd.grad(direct, scores)[0], atol=1e-5, rtol=1e-5)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="sinkhorn_epsilon"):
        sinkhorn_knopp(torch.randn(4, 3), epsilon=0.0)
    with pytest.raises(ConfigError, match="sinkhorn_iterations"):
        sinkhorn_knopp(torch.randn(4, 3), iterations=0)
    with pytest.raises(ConfigError, match="temperature"):
        swapped_prediction_loss(torch.randn(2, 4, 3), torch.rand(2, 4, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="coded"):
        swapped_prediction_loss(torch.randn(2, 4, 3), torch.rand(3, 4, 3))
