"""CLIP and SigLIP losses against slow, direct implementations of the papers' equations
(CLIP: Radford et al. 2021, Figure 3; SigLIP: Zhai et al. 2023, Algorithm 1)."""

import math

import pytest
import torch

from contrastlab.losses import CLIPLoss, SigLIPLoss, clip_loss, siglip_loss
from contrastlab.losses.clip import clip_logit_scale


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return sum(u[k] * v[k] for k in range(len(u))) / (
        torch.sqrt(sum(u[k] ** 2 for k in range(len(u))))
        * torch.sqrt(sum(v[k] ** 2 for k in range(len(v)))))


def clip_direct(x: torch.Tensor, y: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """(1/2N) sum_i [-log softmax_j(s_ij)_i - log softmax_j(s_ji)_i], s_ij = e^t cos(x_i, y_j)."""
    n = x.shape[0]
    scale = torch.exp(log_scale)
    s = [[scale * cosine(x[i], y[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        row = torch.log(sum(torch.exp(s[i][j]) for j in range(n)))
        column = torch.log(sum(torch.exp(s[j][i]) for j in range(n)))
        total = total + (row - s[i][i]) + (column - s[i][i])
    return total / (2 * n)


def siglip_direct(x: torch.Tensor, y: torch.Tensor, log_t: torch.Tensor,
                  b: torch.Tensor) -> torch.Tensor:
    """-(1/N) sum_ij log sigmoid(z_ij (t x_i.y_j + b)), z = +1 on the diagonal, -1 elsewhere."""
    n = x.shape[0]
    t = torch.exp(log_t)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            u = z * (t * cosine(x[i], y[j]) + b)
            total = total + torch.log(1.0 / (1.0 + torch.exp(-u)))
    return -total / n


def leaves(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    return x, y


def assert_all_close(ours: tuple[torch.Tensor, ...], direct: tuple[torch.Tensor, ...]) -> None:
    for a, b in zip(ours, direct, strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.07), (5, 8, 0.5), (9, 4, 0.02)])
def test_clip_value_and_gradients_match_direct_formula(n: int, d: int, temperature: float) -> None:
    x, y = leaves(n, d, n * 10 + d)
    log_scale = torch.tensor(math.log(1 / temperature), dtype=torch.float64, requires_grad=True)
    ours = clip_loss(x, y, log_scale)
    direct = clip_direct(x, y, log_scale)
    assert_all_close((ours,), (direct,))
    assert_all_close(torch.autograd.grad(ours, (x, y, log_scale)),
                     torch.autograd.grad(direct, (x, y, log_scale)))


@pytest.mark.parametrize("n,d,t,b", [(2, 3, 10.0, -10.0), (6, 5, 3.0, 0.5), (8, 16, 1.0, -2.0)])
def test_siglip_value_and_gradients_match_direct_formula(n: int, d: int, t: float,
                                                         b: float) -> None:
    x, y = leaves(n, d, n * 10 + d)
    log_t = torch.tensor(math.log(t), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    ours = siglip_loss(x, y, log_t, bias)
    direct = siglip_direct(x, y, log_t, bias)
    assert_all_close((ours,), (direct,))
    assert_all_close(torch.autograd.grad(ours, (x, y, log_t, bias)),
                     torch.autograd.grad(direct, (x, y, log_t, bias)))


def test_learnable_temperature_and_bias_receive_gradients() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    clip = CLIPLoss()
    clip(x, y).backward()
    assert clip.log_scale.grad is not None and clip.log_scale.grad.abs() > 0
    siglip = SigLIPLoss()
    siglip(x, y).backward()
    assert siglip.log_temperature.grad is not None and siglip.log_temperature.grad.abs() > 0
    assert siglip.bias.grad is not None and siglip.bias.grad.abs() > 0


def test_paper_initialisations() -> None:
    assert CLIPLoss().log_scale.item() == pytest.approx(math.log(1 / 0.07))
    siglip = SigLIPLoss()
    assert siglip.log_temperature.item() == pytest.approx(math.log(10))
    assert siglip.bias.item() == pytest.approx(-10.0)


def test_both_losses_are_symmetric_in_the_two_towers() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    s = torch.tensor(2.0, dtype=torch.float64)
    b = torch.tensor(-1.5, dtype=torch.float64)
    torch.testing.assert_close(clip_loss(x, y, s), clip_loss(y, x, s))
    torch.testing.assert_close(siglip_loss(x, y, s, b), siglip_loss(y, x, s, b))
    # but the pairing matters: shuffling the partners changes (raises) the loss
    aligned = clip_loss(x, x + 0.01 * y, s)
    assert clip_loss(x, (x + 0.01 * y)[torch.randperm(7)], s) > aligned


def test_clip_scale_is_clipped_at_100_without_gradient_beyond() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    high = torch.tensor(math.log(1000.0), dtype=torch.float64, requires_grad=True)
    at_limit = torch.tensor(math.log(100.0), dtype=torch.float64)
    loss = clip_loss(x, y, high)
    torch.testing.assert_close(loss, clip_direct(x, y, at_limit))
    loss.backward()
    assert high.grad is not None and high.grad.item() == 0.0
    assert clip_logit_scale(high.detach()).item() == pytest.approx(100.0)
    module = CLIPLoss()
    with torch.no_grad():
        module.log_scale.fill_(7.0)
    module.clip_scale()
    assert module.log_scale.item() == pytest.approx(math.log(100.0))


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_invariant_to_embedding_scale_and_stable_in_bfloat16(loss_name: str) -> None:
    torch.manual_seed(3)
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    s, b = torch.tensor(math.log(100.0)), torch.tensor(-10.0)

    def loss(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return clip_loss(u, v, s) if loss_name == "clip" else siglip_loss(u, v, s, b)

    torch.testing.assert_close(loss(x, y), loss(3 * x, 0.1 * y))
    low = loss(x.bfloat16(), y.bfloat16())
    assert low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(low, loss(x, y), atol=0.05, rtol=0.02)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(4, 3), torch.randn(5, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="same shape"):
        siglip_loss(torch.randn(4, 3), torch.randn(4, 2), torch.tensor(1.0), torch.tensor(0.0))
