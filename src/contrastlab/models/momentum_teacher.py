r"""The momentum teacher shared by BYOL (target network), MoCo v2/v3 (key / momentum encoder) and
DINO (teacher): frozen copies of student modules that follow them by an exponential moving
average after every optimiser step.

.. math::  \xi \leftarrow m\,\xi + (1 - m)\,\theta, \qquad
           m = 1 - (1 - m_{base}) (\cos(\pi p) + 1) / 2 \ \text{(cosine schedule, progress p)}

(He et al., "Momentum Contrast", CVPR 2020, Eq. 2; Grill et al., "Bootstrap Your Own Latent",
NeurIPS 2020, Sec. 3.2). The pairs idea follows solo-learn's ``momentum_pairs``: a method lists
which of its modules have a momentum copy, and one object updates them all.

The copies stay attributes of the method, under the method's own names (``target_backbone``,
``key_projection_head``, ``teacher_head``...), so they are registered submodules that checkpoints
and DDP see, with the state-dict keys the methods have always had::

    self.momentum_teacher = MomentumTeacher(settings.ema_momentum, settings.ema_cosine)
    self.target_backbone = self.momentum_teacher.copy_of(self.backbone)
    ...
    self.momentum_teacher.update(progress)          # in on_step_end

This object holds only the schedule and the (teacher, student) pairs, no state of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastlab.errors import ConfigError
from contrastlab.models.ema import cosine_momentum, ema_update, make_teacher


class MomentumTeacher:
    """Momentum copies of student modules and their EMA schedule.

    Args:
        base_momentum: m, or the starting value of the cosine schedule, in [0, 1].
        cosine: raise the momentum from ``base_momentum`` to 1 on a cosine over training.
    """

    def __init__(self, base_momentum: float, cosine: bool = False) -> None:
        if not 0.0 <= base_momentum <= 1.0:
            raise ConfigError(f"ema_momentum must be in [0, 1], got {base_momentum}")
        self.base_momentum = base_momentum
        self.cosine = cosine
        self.pairs: list[tuple[nn.Module, nn.Module]] = []

    def copy_of(self, student: nn.Module) -> nn.Module:
        """A frozen deep copy of ``student`` that :meth:`update` moves towards it; assign it to
        an attribute of the method to register it."""
        teacher = make_teacher(student)
        self.pairs.append((teacher, student))
        return teacher

    def momentum(self, progress: float) -> float:
        """m at ``progress`` in [0, 1] of training."""
        return cosine_momentum(self.base_momentum, progress) if self.cosine else self.base_momentum

    @torch.no_grad()
    def update(self, progress: float) -> float:
        """One EMA step of every copy towards its student (buffers copied); returns m."""
        momentum = self.momentum(progress)
        for teacher, student in self.pairs:
            ema_update(teacher, student, momentum)
        return momentum

    def __repr__(self) -> str:
        return (f"MomentumTeacher(base_momentum={self.base_momentum}, cosine={self.cosine}, "
                f"copies={len(self.pairs)})")


__all__ = ["MomentumTeacher"]
