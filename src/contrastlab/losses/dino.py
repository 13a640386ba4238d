r"""DINO: self-distillation with no labels.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021, Sec. 3.1 and Algorithm 1.

The teacher's output g_t on a global view is centred and sharpened, the student's output g_s on
another view is softened, and the student is trained to match the teacher:

.. math::

    P_t = \operatorname{softmax}((g_t - c) / \tau_t), \qquad
    \log P_s = \operatorname{log\,softmax}(g_s / \tau_s), \qquad
    \mathcal{L} = \frac{1}{|\{(t, s)\}|} \sum_{t \in \text{global}} \sum_{s \ne t}
        \frac{1}{B} \sum_b -\sum_k P_t^{(k)} \log P_s^{(k)}

over pairs of a teacher view t (the 2 global views) and a student view s (every view, global and
local, except t itself): the cross-view cross-entropy that SwAV also uses
(:func:`contrastlab.losses.cross_view.cross_view_cross_entropy`). No gradient flows into the
teacher. The centre follows the teacher's
mean output with momentum m (Eq. 4):

.. math::  c \leftarrow m\,c + (1 - m) \frac{1}{B} \sum_{b} g_t(x_b)

where the mean runs over the teacher outputs of the global views of the whole (all-reduced)
batch. The teacher temperature rises linearly from 0.04 to its final value (0.04-0.07) during the
first 30 epochs; the student temperature is 0.1; m = 0.9.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastlab.distributed import all_reduce_sum, world_size
from contrastlab.errors import ConfigError
from contrastlab.losses.checks import check_temperature
from contrastlab.losses.cross_view import check_cross_view_shapes, cross_view_cross_entropy
from contrastlab.losses.tiled import compute_dtype


def dino_loss(
    student_output: Tensor,
    teacher_output: Tensor,
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> Tensor:
    """DINO's cross-entropy between centred, sharpened teacher and softened student outputs.

    Args:
        student_output: (V, B, K) student head outputs of every view (global views first).
        teacher_output: (T, B, K) teacher head outputs of the T <= V global views; view t of the
            teacher is the same crop as view t of the student. Treated as a constant (detached).
        center: (K,) or (1, K) centre c.
        student_temperature: tau_s > 0 (0.1 in the paper).
        teacher_temperature: tau_t > 0 (0.04 -> 0.07 in the paper).

    Returns:
        The mean over pairs (t, s != t) and the batch of ``-sum_k P_t log P_s``.
    """
    check_temperature(student_temperature)
    check_temperature(teacher_temperature, "teacher_temperature")
    check_cross_view_shapes(teacher_output, student_output, "teacher")
    teacher = teacher_output.detach().to(compute_dtype(student_output))
    p_teacher = torch.softmax((teacher - center.detach().reshape(1, 1, -1).to(teacher.dtype))
                              / teacher_temperature, dim=-1)
    return cross_view_cross_entropy(p_teacher, student_output, student_temperature,
                                    target_kind="teacher")


@torch.no_grad()
def batch_center(teacher_output: Tensor) -> Tensor:
    """Mean teacher output over all rows (views x samples) of the global batch, shape (K,)."""
    flat = teacher_output.detach().reshape(-1, teacher_output.shape[-1]).float()
    total = all_reduce_sum(flat.sum(dim=0))
    return total / (flat.shape[0] * world_size())


@torch.no_grad()
def updated_center(center: Tensor, teacher_output: Tensor, momentum: float = 0.9) -> Tensor:
    """DINO's centre update (Eq. 4): ``m c + (1 - m) mean(teacher outputs)``, shape of ``center``.

    ``teacher_output`` is (T, B, K) or (N, K); the mean is over all rows and all ranks.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"center_momentum must be in [0, 1], got {momentum}")
    mean = batch_center(teacher_output).to(center.dtype).reshape(center.shape)
    return momentum * center + (1.0 - momentum) * mean


def teacher_temperature_at(
    progress: float, warmup_temperature: float = 0.04, temperature: float = 0.07,
    warmup_share: float = 0.3,
) -> float:
    """Teacher temperature at ``progress`` in [0, 1] of training: linear from
    ``warmup_temperature`` to ``temperature`` over the first ``warmup_share`` of the schedule,
    then constant (DINO: 0.04 -> 0.07 over the first 30 epochs)."""
    if warmup_share <= 0.0 or progress >= warmup_share:
        return temperature
    fraction = max(progress, 0.0) / warmup_share
    return warmup_temperature + (temperature - warmup_temperature) * fraction


class DINOLoss(nn.Module):
    """Module wrapper of :func:`dino_loss` that keeps the centre in a buffer (``center``, (1, K))
    so checkpoints include it; :meth:`update_center` applies Eq. 4."""

    center: Tensor

    def __init__(self, num_prototypes: int, student_temperature: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        check_temperature(student_temperature)
        if not 0.0 <= center_momentum <= 1.0:
            raise ConfigError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def forward(self, student_output: Tensor, teacher_output: Tensor,
                teacher_temperature: float) -> Tensor:
        return dino_loss(student_output, teacher_output, self.center, self.student_temperature,
                         teacher_temperature)

    @torch.no_grad()
    def update_center(self, teacher_output: Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_output)`` in place; a non-finite result (a step
        whose outputs overflowed) leaves the centre as it was."""
        new = updated_center(self.center, teacher_output, self.center_momentum)
        self.center.copy_(torch.where(torch.isfinite(new).all(), new, self.center))

    def extra_repr(self) -> str:
        return (f"num_prototypes={self.center.shape[1]}, "
                f"student_temperature={self.student_temperature}, "
                f"center_momentum={self.center_momentum}")


__all__ = ["DINOLoss", "batch_center", "dino_loss", "teacher_temperature_at", "updated_center"]
