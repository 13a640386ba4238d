"""BYOL's normalised MSE and SimSiam's negative cosine against slow, direct implementations of
Grill et al. 2020 Eq. 2 and Chen & He 2021 Eq. 1-4, and their stop-gradients."""

import pytest
import torch

from contrastlab.losses import (
    BYOLLoss,
    SimSiamLoss,
    byol_loss,
    negative_cosine,
    normalized_mse,
    simsiam_loss,
)


def squared_distance_of_unit_vectors(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """|| p/||p|| - z/||z|| ||_2^2 written with explicit sums over dimensions."""
    norm_p = torch.sqrt(sum(p[j] ** 2 for j in range(p.shape[0])))
    norm_z = torch.sqrt(sum(z[j] ** 2 for j in range(z.shape[0])))
    return sum((p[j] / norm_p - z[j] / norm_z) ** 2 for j in range(p.shape[0]))


def byol_direct(p1, p2, t1, t2) -> torch.Tensor:
    """L + L~ with L = mean_i ||p1_i - t2_i||^2 on unit vectors, targets constant."""
    t1, t2 = t1.detach(), t2.detach()
    n = p1.shape[0]
    first = sum(squared_distance_of_unit_vectors(p1[i], t2[i]) for i in range(n)) / n
    second = sum(squared_distance_of_unit_vectors(p2[i], t1[i]) for i in range(n)) / n
    return first + second


def d_direct(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -mean_i (p_i / ||p_i||) . (z_i / ||z_i||), z constant."""
    z = z.detach()
    total = 0.0
    for i in range(p.shape[0]):
        dot = sum(p[i, j] * z[i, j] for j in range(p.shape[1]))
        total = total - dot / (torch.linalg.norm(p[i]) * torch.linalg.norm(z[i]))
    return total / p.shape[0]


def _tensors(seed: int, n: int, d: int, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
            for _ in range(count)]


@pytest.mark.parametrize("n,d", [(1, 2), (4, 8), (7, 5)])
def test_byol_value_and_gradient_match_direct_formula(n: int, d: int) -> None:
    p1, p2, t1, t2 = _tensors(n * 10 + d, n, d, 4)
    ours = byol_loss(p1, p2, t1, t2)
    direct = byol_direct(p1, p2, t1, t2)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (p1, p2)), torch.autograd.grad(direct, (p1, p2)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(BYOLLoss()(p1, p2, t1, t2), ours)


@pytest.mark.parametrize("n,d", [(1, 2), (4, 8), (7, 5)])
def test_simsiam_value_and_gradient_match_direct_formula(n: int, d: int) -> None:
    p1, p2, z1, z2 = _tensors(n * 20 + d, n, d, 4)
    ours = simsiam_loss(p1, p2, z1, z2)
    direct = 0.5 * d_direct(p1, z2) + 0.5 * d_direct(p2, z1)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (p1, p2)), torch.autograd.grad(direct, (p1, p2)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(SimSiamLoss()(p1, p2, z1, z2), ours)


def test_targets_receive_no_gradient() -> None:
    p1, p2, t1, t2 = _tensors(0, 4, 6, 4)
    grads = torch.autograd.grad(byol_loss(p1, p2, t1, t2), (t1, t2), allow_unused=True)
    assert grads == (None, None)
    grads = torch.autograd.grad(simsiam_loss(p1, p2, t1, t2), (t1, t2), allow_unused=True)
    assert grads == (None, None)
    # the stop-gradient also holds when prediction and target share a graph (p = h(z))
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 6, dtype=torch.float64)
    (grad_z,) = torch.autograd.grad(negative_cosine(z @ weight, z), z)
    (through_p_only,) = torch.autograd.grad(negative_cosine(z @ weight, z.detach()), z)
    torch.testing.assert_close(grad_z, through_p_only)


def d_direct_both(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) with the gradient reaching z too (no stop-gradient)."""
    total = 0.0
    for i in range(p.shape[0]):
        dot = sum(p[i, j] * z[i, j] for j in range(p.shape[1]))
        total = total - dot / (torch.linalg.norm(p[i]) * torch.linalg.norm(z[i]))
    return total / p.shape[0]


def test_simsiam_without_stop_gradient_differentiates_the_targets() -> None:
    p1, p2, z1, z2 = _tensors(5, 4, 6, 4)
    ours = simsiam_loss(p1, p2, z1, z2, stop_gradient=False)
    direct = 0.5 * d_direct_both(p1, z2) + 0.5 * d_direct_both(p2, z1)
    torch.testing.assert_close(ours, direct, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours, simsiam_loss(p1, p2, z1, z2))  # the same value
    inputs = (p1, p2, z1, z2)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(direct, inputs),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
        assert a.abs().sum() > 0  # z1 and z2 get a gradient now


def test_ranges_at_alignment_and_opposition() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    assert normalized_mse(x, 2 * x).item() == pytest.approx(0.0, abs=1e-12)
    assert normalized_mse(x, -x).item() == pytest.approx(4.0)
    assert negative_cosine(x, 3 * x).item() == pytest.approx(-1.0)
    assert simsiam_loss(x, x, -x, -x).item() == pytest.approx(1.0)


def test_shapes_and_half_precision() -> None:
    with pytest.raises(ValueError, match="same shape"):
        normalized_mse(torch.randn(4, 3), torch.randn(4, 2))
    out = normalized_mse(torch.randn(4, 3).bfloat16(), torch.randn(4, 3))
    assert out.dtype == torch.float32
