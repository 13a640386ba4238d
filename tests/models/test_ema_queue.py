"""EMA teachers and the FIFO feature queue against their formulas (MoCo Eq. 2, BYOL Sec. 3.2)."""

import math

import pytest
import torch
from torch import nn

from contrastlab.models.ema import cosine_momentum, ema_update, make_teacher
from contrastlab.models.queue import FeatureQueue


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_ema_update_follows_formula_per_parameter_and_copies_buffers() -> None:
    torch.manual_seed(0)
    student = _net()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():  # move the two apart, and give the student new BN statistics
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(8, 3))
    before = {name: p.clone() for name, p in teacher.named_parameters()}
    m = 0.9
    ema_update(teacher, student, m)
    for name, theta in student.named_parameters():
        xi = dict(teacher.named_parameters())[name]
        for index in range(theta.numel()):
            expected = m * before[name].flatten()[index] + (1 - m) * theta.flatten()[index]
            assert xi.flatten()[index].item() == pytest.approx(expected.item(), abs=1e-6)
    for (name, buffer), (_, student_buffer) in zip(teacher.named_buffers(),
                                                   student.named_buffers(), strict=True):
        assert torch.equal(buffer, student_buffer), name


def test_ema_endpoints() -> None:
    student, other = _net(), _net()
    teacher = make_teacher(other)
    frozen = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), frozen, strict=True))
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters(),
                                                  strict=True))
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, 1.5)


def test_cosine_momentum_endpoints_and_midpoint() -> None:
    base = 0.996
    assert cosine_momentum(base, 0.0) == pytest.approx(base)
    assert cosine_momentum(base, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(base, 0.5) == pytest.approx(1 - (1 - base) / 2)
    k, big_k = 3, 10  # tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2
    expected = 1 - (1 - base) * (math.cos(math.pi * k / big_k) + 1) / 2
    assert cosine_momentum(base, k / big_k) == pytest.approx(expected)
    assert cosine_momentum(base, -1.0) == pytest.approx(base)  # clamped to [0, 1]
    assert cosine_momentum(base, 2.0) == pytest.approx(1.0)


@pytest.mark.parametrize("size,batch", [(10, 4), (7, 3), (3, 5), (8, 8)])
def test_queue_holds_newest_k_in_order(size: int, batch: int) -> None:
    queue = FeatureQueue(size, 2)
    written: list[torch.Tensor] = []
    assert queue.valid().shape == (0, 2)
    for step in range(5):
        rows = torch.arange(step * batch, (step + 1) * batch, dtype=torch.float32)
        batch_rows = torch.stack([rows, -rows], dim=1)
        queue.enqueue(batch_rows)
        written.extend(batch_rows)
        expected = torch.stack(written[-size:])
        torch.testing.assert_close(queue.ordered(), expected)
        assert queue.valid().shape[0] == min(len(written), size)
        assert sorted(queue.valid()[:, 0].tolist()) == sorted(expected[:, 0].tolist())


def test_queue_state_dict_round_trip() -> None:
    queue = FeatureQueue(5, 3)
    queue.enqueue(torch.randn(3, 3))
    queue.enqueue(torch.randn(4, 3))
    state = queue.state_dict()
    assert set(state) == {"features", "pointer", "filled"}
    restored = FeatureQueue(5, 3)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.ordered(), queue.ordered())
    extra = torch.randn(2, 3)
    queue.enqueue(extra)
    restored.enqueue(extra)
    torch.testing.assert_close(restored.ordered(), queue.ordered())


def test_queue_initial_rows_are_unit_vectors_and_bad_sizes_refused() -> None:
    queue = FeatureQueue(6, 4)
    torch.testing.assert_close(queue.features.norm(dim=1), torch.ones(6))
    with pytest.raises(ValueError, match="size"):
        FeatureQueue(0, 4)
