"""MoCo InfoNCE (queue form and in-batch form) against slow, direct implementations of the papers'
equations: He et al. 2020 Eq. 1 / Algorithm 1 and Chen, Xie & He 2021 Algorithm 1."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import (
    MoCoInfoNCELoss,
    MoCoV3Loss,
    in_batch_info_nce,
    moco_info_nce,
    moco_v3_info_nce,
)


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (torch.linalg.norm(u) * torch.linalg.norm(v))


def moco_direct(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """l_i = -log exp(q_i.k_i/tau) / (exp(q_i.k_i/tau) + sum_j exp(q_i.kappa_j/tau)), averaged."""
    total = 0.0
    for i in range(q.shape[0]):
        positive = torch.exp(cosine(q[i], k[i]) / tau)
        negatives = sum((torch.exp(cosine(q[i], queue[j]) / tau) for j in range(queue.shape[0])),
                        torch.zeros((), dtype=q.dtype))
        total = total - torch.log(positive / (positive + negatives))
    return total / q.shape[0]


def in_batch_direct(a: torch.Tensor, c: torch.Tensor, tau: float, offset: int) -> torch.Tensor:
    """l_i = -log exp(a_i.c_{o+i}/tau) / sum_j exp(a_i.c_j/tau), averaged over the anchors."""
    total = 0.0
    for i in range(a.shape[0]):
        numerator = torch.exp(cosine(a[i], c[offset + i]) / tau)
        denominator = sum(torch.exp(cosine(a[i], c[j]) / tau) for j in range(c.shape[0]))
        total = total - torch.log(numerator / denominator)
    return total / a.shape[0]


def _tensors(seed: int, *shapes: tuple[int, int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, dtype=torch.float64, generator=generator, requires_grad=True)
            for s in shapes]


@pytest.mark.parametrize("n,d,k,tau", [(2, 3, 5, 0.2), (6, 8, 13, 0.07), (4, 16, 1, 1.0),
                                       (5, 4, 0, 0.5)])
def test_queue_form_value_and_gradient_match_direct_formula(n: int, d: int, k: int,
                                                             tau: float) -> None:
    q, keys, queue = _tensors(n * 31 + k, (n, d), (n, d), (k, d))
    ours = moco_info_nce(q, keys, queue, tau)
    direct = moco_direct(q, keys, queue, tau)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0],
                               torch.autograd.grad(direct, q)[0], atol=1e-5, rtol=1e-5)


def test_keys_and_queue_receive_no_gradient() -> None:
    q, keys, queue = _tensors(1, (4, 8), (4, 8), (9, 8))
    loss = moco_info_nce(q, keys, queue, 0.2)
    grad_keys, grad_queue = torch.autograd.grad(loss, (keys, queue), allow_unused=True)
    assert grad_keys is None and grad_queue is None
    v3 = moco_v3_info_nce(q, keys, 0.2)
    assert torch.autograd.grad(v3, keys, allow_unused=True)[0] is None


def test_empty_queue_leaves_only_the_positive() -> None:
    q, keys, queue = _tensors(2, (3, 4), (3, 4), (0, 4))
    assert moco_info_nce(q, keys, queue, 0.2).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n,m,offset,tau", [(3, 3, 0, 0.2), (4, 12, 4, 0.1), (2, 6, 4, 1.0)])
def test_in_batch_value_and_gradients_match_direct_formula(n: int, m: int, offset: int,
                                                            tau: float) -> None:
    a, c = _tensors(n + 7 * m + offset, (n, 8), (m, 8))
    ours = in_batch_info_nce(a, c, tau, offset)
    direct = in_batch_direct(a, c, tau, offset)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for g_ours, g_direct in zip(torch.autograd.grad(ours, (a, c)),
                                torch.autograd.grad(direct, (a, c)), strict=True):
        torch.testing.assert_close(g_ours, g_direct, atol=1e-5, rtol=1e-5)


def test_moco_v3_is_in_batch_info_nce_scaled_by_two_tau_and_symmetrised() -> None:
    q1, q2, k1, k2 = _tensors(3, (5, 6), (5, 6), (5, 6), (5, 6))
    tau = 0.2
    ours = MoCoV3Loss(tau)(q1, q2, k1, k2)
    direct = 2 * tau * (in_batch_direct(q1, k2, tau, 0) + in_batch_direct(q2, k1, tau, 0))
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for g_ours, g_direct in zip(torch.autograd.grad(ours, (q1, q2)),
                                torch.autograd.grad(direct, (q1, q2)), strict=True):
        torch.testing.assert_close(g_ours, g_direct, atol=1e-5, rtol=1e-5)


def test_low_temperature_and_half_precision_stay_finite() -> None:
    torch.manual_seed(0)
    q, keys, queue = torch.randn(8, 16), torch.randn(8, 16), torch.randn(100, 16)
    assert math.isfinite(moco_info_nce(q, keys, queue, 0.01).item())
    half = moco_info_nce(q.bfloat16(), keys.bfloat16(), queue, 0.01)
    assert half.dtype == torch.float32 and math.isfinite(half.item())
    assert math.isfinite(in_batch_info_nce(q.bfloat16(), keys.bfloat16(), 0.01).item())


def test_bad_arguments() -> None:
    q = torch.randn(4, 8)
    with pytest.raises(ConfigError, match="temperature"):
        moco_info_nce(q, q, q, 0.0)
    with pytest.raises(ConfigError, match="temperature"):
        MoCoInfoNCELoss(-1.0)
    with pytest.raises(ValueError, match="share the dimension"):
        moco_info_nce(q, q, torch.randn(5, 7), 0.2)
    with pytest.raises(ValueError, match="row_offset"):
        in_batch_info_nce(q, q, 0.2, row_offset=1)
