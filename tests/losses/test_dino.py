"""DINO's loss, centre update and teacher temperature schedule against direct implementations."""

from __future__ import annotations

import math

import pytest
import torch

import contrastlab.losses.dino as dino_module
from contrastlab.errors import ConfigError
from contrastlab.losses import DINOLoss, dino_loss, teacher_temperature_at, updated_center


def dino_direct(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
                tau_s: float, tau_t: float) -> torch.Tensor:
    """Caron et al. 2021, Algorithm 1 with loops: H(t, s) = -sum_k P_t log P_s averaged over the
    pairs (teacher view t, student view s != t) and the samples."""
    num_student, batch, k_count = student.shape
    total = torch.zeros((), dtype=student.dtype)
    pairs = 0
    for t in range(teacher.shape[0]):
        for s in range(num_student):
            if s == t:
                continue
            pairs += 1
            for b in range(batch):
                t_den = sum(math.exp((float(teacher[t, b, j]) - float(center[j])) / tau_t)
                            for j in range(k_count))
                s_den = sum(torch.exp(student[s, b, j] / tau_s) for j in range(k_count))
                for k in range(k_count):
                    p_teacher = math.exp((float(teacher[t, b, k]) - float(center[k])) / tau_t) \
                        / t_den
                    total = total - p_teacher * torch.log(torch.exp(student[s, b, k] / tau_s)
                                                          / s_den)
    return total / (pairs * batch)


@pytest.mark.parametrize("views,batch,k,tau_t", [(2, 3, 4, 0.04), (4, 2, 5, 0.07),
                                                 (8, 2, 3, 0.5)])
def test_value_and_gradient_match_direct_formula(views: int, batch: int, k: int,
                                                 tau_t: float) -> None:
    gen = torch.Generator().manual_seed(views * 10 + k)
    student = torch.randn(views, batch, k, dtype=torch.float64, generator=gen, requires_grad=True)
    teacher = torch.randn(2, batch, k, dtype=torch.float64, generator=gen)
    center = 0.3 * torch.randn(k, dtype=torch.float64, generator=gen)
    ours = dino_loss(student, teacher, center, 0.1, tau_t)
    direct = dino_direct(student, teacher, center, 0.1, tau_t)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, student)[0],
                               torch.autograd.grad(direct, student)[0], atol=1e-5, rtol=1e-5)


def test_teacher_and_center_receive_no_gradient() -> None:
    student = torch.randn(4, 3, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5, requires_grad=True)
    center = torch.randn(1, 5, requires_grad=True)
    dino_loss(student, teacher, center).backward()
    assert student.grad is not None
    assert teacher.grad is None and center.grad is None


def test_center_update_matches_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 6, 4, dtype=torch.float64, generator=gen)
    center = torch.randn(1, 4, dtype=torch.float64, generator=gen)
    m = 0.9
    mean = [sum(float(teacher[v, b, k]) for v in range(2) for b in range(6)) / 12
            for k in range(4)]
    expected = torch.tensor([[m * float(center[0, k]) + (1 - m) * mean[k] for k in range(4)]],
                            dtype=torch.float64)
    torch.testing.assert_close(updated_center(center, teacher, m), expected)
    module = DINOLoss(4, center_momentum=m).double()
    module.center.copy_(center)
    module.update_center(teacher)
    torch.testing.assert_close(module.center, expected)
    module.update_center(torch.full((2, 6, 4), float("nan"), dtype=torch.float64))
    torch.testing.assert_close(module.center, expected)  # a non-finite batch is ignored


def test_center_mean_is_over_all_ranks(monkeypatch: pytest.MonkeyPatch, two_ranks) -> None:
    ranks = two_ranks
    monkeypatch.setattr(dino_module, "all_reduce_sum", ranks.all_reduce_sum)
    monkeypatch.setattr(dino_module, "world_size", ranks.world_size)
    teacher = torch.randn(2, 8, 3, dtype=torch.float64)
    center = torch.zeros(1, 3, dtype=torch.float64)
    halves = ranks.run(lambda t: updated_center(center, t, 0.5),
                       [teacher[:, :4], teacher[:, 4:]])
    monkeypatch.undo()
    expected = updated_center(center, teacher, 0.5)
    torch.testing.assert_close(halves[0], expected)
    torch.testing.assert_close(halves[1], expected)


def test_teacher_temperature_schedule() -> None:
    assert teacher_temperature_at(0.0, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temperature_at(0.15, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temperature_at(0.3, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature_at(1.0, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert teacher_temperature_at(0.0, 0.04, 0.07, 0.0) == pytest.approx(0.07)
    values = [teacher_temperature_at(p / 20, 0.04, 0.07, 0.5) for p in range(21)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_low_precision_outputs_give_a_float32_finite_loss() -> None:
    student = torch.randn(4, 8, 16).bfloat16()
    loss = dino_loss(student, student[:2], torch.zeros(16), 0.1, 0.04)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="teacher_temperature"):
        dino_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(4), 0.1, 0.0)
    with pytest.raises(ConfigError, match="center_momentum"):
        DINOLoss(4, center_momentum=1.5)
    with pytest.raises(ValueError, match="teacher views"):
        dino_loss(torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.zeros(4))
