r"""Exponential moving averages of networks (MoCo key encoder, BYOL/DINO teachers).

After each optimiser step the teacher parameters follow the student's:

.. math::  \xi \leftarrow m\,\xi + (1 - m)\,\theta

(He et al., "Momentum Contrast", CVPR 2020, Eq. 2; Grill et al., "Bootstrap Your Own Latent",
NeurIPS 2020, Sec. 3.1). BYOL and DINO raise ``m`` from its base value to 1 over training on a
cosine, :math:`m_k = 1 - (1 - m_{base}) (\cos(\pi k / K) + 1) / 2`. Buffers (batch-norm running
statistics) are copied from the student, as in the reference implementations' ``state_dict``
handling of MoCo v3 / BYOL: they are not parameters and have no gradient to average.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(base: float, progress: float) -> float:
    """Momentum at ``progress`` in [0, 1] of training: ``base`` at 0, 1 at the end (BYOL
    Sec. 3.2)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` that receives no gradient (parameters frozen)."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    r"""In place :math:`\xi \leftarrow m \xi + (1 - m) \theta` for every parameter; buffers
    copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student have different parameters")
    if teacher_params:
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
    for teacher_buffer, student_buffer in zip(teacher.buffers(), student.buffers(), strict=True):
        teacher_buffer.copy_(student_buffer)


__all__ = ["cosine_momentum", "ema_update", "make_teacher"]
