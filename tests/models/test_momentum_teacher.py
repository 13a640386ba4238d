"""MomentumTeacher: frozen copies registered under the owner's names (state-dict keys unchanged),
one EMA update for every pair following xi <- m xi + (1 - m) theta, constant or cosine m."""

import pytest
import torch
from torch import nn

from contrastlab.errors import ConfigError
from contrastlab.models.ema import cosine_momentum
from contrastlab.models.momentum_teacher import MomentumTeacher


class Owner(nn.Module):
    """A method-like module with two students and their momentum copies."""

    def __init__(self, base: float, cosine: bool) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)
        self.momentum_teacher = MomentumTeacher(base, cosine)
        self.target_backbone = self.momentum_teacher.copy_of(self.backbone)
        self.target_head = self.momentum_teacher.copy_of(self.head)


def test_copies_are_frozen_submodules_under_the_owners_names() -> None:
    owner = Owner(0.9, cosine=False)
    keys = set(owner.state_dict())
    assert {"target_backbone.0.weight", "target_backbone.1.running_mean",
            "target_head.bias"} <= keys
    assert not any(key.startswith("momentum_teacher") for key in keys)
    assert all(not p.requires_grad for p in [*owner.target_backbone.parameters(),
                                             *owner.target_head.parameters()])
    trainable = [name for name, p in owner.named_parameters() if p.requires_grad]
    assert trainable and all(not name.startswith("target_") for name in trainable)


@pytest.mark.parametrize("cosine", [False, True])
def test_update_moves_every_copy_towards_its_student(cosine: bool) -> None:
    torch.manual_seed(0)
    owner = Owner(0.9, cosine)
    with torch.no_grad():
        for p in [*owner.backbone.parameters(), *owner.head.parameters()]:
            p.add_(torch.randn_like(p))
    owner.backbone.train()(torch.randn(8, 3))  # new batch-norm statistics in the student
    pairs = [(owner.target_backbone, owner.backbone), (owner.target_head, owner.head)]
    before = [[p.clone() for p in teacher.parameters()] for teacher, _ in pairs]
    m = owner.momentum_teacher.update(0.5)
    assert m == pytest.approx(cosine_momentum(0.9, 0.5) if cosine else 0.9)
    for (teacher, student), old in zip(pairs, before, strict=True):
        for xi, xi_old, theta in zip(teacher.parameters(), old, student.parameters(),
                                     strict=True):
            torch.testing.assert_close(xi, m * xi_old + (1 - m) * theta)
    torch.testing.assert_close(owner.target_backbone[1].running_mean,
                               owner.backbone[1].running_mean)


def test_momentum_schedule_and_bad_values() -> None:
    constant, cosine = MomentumTeacher(0.99), MomentumTeacher(0.99, cosine=True)
    assert constant.momentum(0.0) == constant.momentum(0.7) == 0.99
    assert cosine.momentum(0.0) == pytest.approx(0.99)
    assert cosine.momentum(1.0) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="ema_momentum"):
        MomentumTeacher(1.5)
