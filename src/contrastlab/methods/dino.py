"""DINO: self-distillation with no labels.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, ICCV 2021, Algorithm 1::

    gs, gt = student, teacher                    # teacher = EMA of the student, no gradient
    x1, x2, locals = multi-crop views of x
    s = gs(x1, x2, locals); t = gt(x1, x2)       # teacher sees only the global views
    loss = mean over (t_i, s_j), j != i of H(t_i, s_j)
    H(t, s) = -sum softmax((t - C) / tau_t) * log softmax(s / tau_s)
    update gs; gt = l * gt + (1 - l) * gs;  C = m * C + (1 - m) * mean(t)

The student learns to predict the teacher's centred, sharpened output on another view of the same
image; centring and sharpening with a momentum teacher avoid collapse without negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.losses.dino import DINOLoss, teacher_temperature_at
from contrastlab.methods import settings as common
from contrastlab.methods._multi_crop import forward_multi_crop
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone
from contrastlab.models.dino_head import DINOHead
from contrastlab.models.momentum_teacher import MomentumTeacher
from contrastlab.settings import setting


@dataclass
class DINOSettings(MethodSettings):
    """DINO's hyper-parameters."""

    temperature: float = setting(0.1, "Student temperature tau_s.", source="the paper", gt=0)
    teacher_temperature: float = setting(
        0.07, "Teacher temperature tau_t after the warm-up.",
        source="the paper (0.04-0.07)", gt=0)
    warmup_teacher_temperature: float = setting(
        0.04, "Teacher temperature at the start of the warm-up.", source="the paper", gt=0)
    teacher_temperature_warmup: float = setting(
        0.3, "Share of the schedule over which tau_t rises linearly.",
        source="the paper: 30 epochs of 100", ge=0, le=1,
        note="is a share of the schedule and ")
    center_momentum: float = setting(0.9, "Momentum m of the centre update.",
                                     source="the paper", ge=0, lt=1)
    ema_momentum: float = common.ema_momentum(0.996, "the paper")
    ema_cosine: bool = common.ema_cosine(True, "the paper")
    projection_dim: int = setting(256, "Bottleneck width of the DINO head.",
                                  source="the paper", ge=1)
    projection_hidden_dim: int = setting(
        512, "Hidden width of the DINO head's MLP.",
        source="here: at the paper's 2048 the head costs more than the small ConvNets", ge=1)
    num_prototypes: int = setting(
        1024, "Outputs K of the DINO head.",
        source="here: about 100 per class on 10-class data (the paper: 65,536 for ImageNet)",
        ge=1)
    freeze_prototypes_steps: int = setting(
        50, "Steps during which the head's last layer gets no gradient.",
        source="here: about the first epoch of a small run (the paper: the first epoch)", ge=0)
    head_layers: int = setting(3, "Linear layers of the DINO head's MLP (before the "
                               "normalised last layer).", source="the paper", ge=1)
    head_batch_norm: bool = setting(
        True, "Batch-normalise the head's hidden layers.",
        source="here: without it a 2-epoch ConvNet run on digits collapsed (the reference "
        "code's use_bn_in_head, off for ViTs)")


class DINO(Method):
    """DINO with multi-crop, an EMA teacher, centring and teacher-temperature warm-up
    (settings: :class:`DINOSettings`; docs/methods.md has the measurements behind the
    defaults that differ from the paper's)."""

    name = "dino"
    Settings = DINOSettings
    num_views = 2
    default_local_crops = 6
    supports_multi_crop = True
    unused_parameters = True  # frozen at first: no gradient under DDP either

    def __init__(self, backbone: Backbone, settings: DINOSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.teacher_temperature = s.teacher_temperature
        self.warmup_teacher_temperature = s.warmup_teacher_temperature
        self.teacher_temperature_warmup = s.teacher_temperature_warmup
        self.ema_momentum, self.ema_cosine = s.ema_momentum, s.ema_cosine
        self.freeze_prototypes_steps = s.freeze_prototypes_steps
        self.head = DINOHead(backbone.output_dim, s.projection_hidden_dim, s.projection_dim,
                             s.num_prototypes, num_layers=s.head_layers,
                             batch_norm=s.head_batch_norm)
        self.momentum_teacher = MomentumTeacher(s.ema_momentum, s.ema_cosine)
        self.teacher_backbone = self.momentum_teacher.copy_of(backbone)
        self.teacher_head = self.momentum_teacher.copy_of(self.head)
        self.criterion = DINOLoss(s.num_prototypes, s.temperature, s.center_momentum)

    def current_teacher_temperature(self) -> float:
        """tau_t at the current progress (linear warm-up, then constant)."""
        return teacher_temperature_at(self.progress, self.warmup_teacher_temperature,
                                      self.teacher_temperature, self.teacher_temperature_warmup)

    def current_ema_momentum(self) -> float:
        """Teacher momentum at the current progress (cosine from the base value to 1)."""
        return self.momentum_teacher.momentum(self.progress)

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) < self.num_views:
            raise ValueError(f"DINO expects {self.num_views} global views (then local views), "
                             f"got {len(views)}")
        batch = views[0].shape[0]
        frozen = self.step < self.freeze_prototypes_steps
        student = forward_multi_crop(
            lambda x: self.head(self.backbone(x), freeze_last_layer=frozen), views,
            self.backbone, self.head,
        ).view(len(views), batch, -1)
        with torch.no_grad():
            global_views = torch.cat(views[: self.num_views])
            teacher = self.teacher_head(self.teacher_backbone(global_views))
            teacher = teacher.view(self.num_views, batch, -1)
        tau_t = self.current_teacher_temperature()
        loss = self.criterion(student, teacher, tau_t)
        return StepOutput(loss=loss, metrics={"teacher_temperature": tau_t,
                                              "ema_momentum": self.current_ema_momentum()},
                          after_step={"teacher_output": teacher})

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """gt = l gt + (1 - l) gs, then C = m C + (1 - m) mean(t) with the step's teacher
        outputs."""
        self.progress = progress
        self.momentum_teacher.update(progress)
        self.criterion.update_center(output.after_step["teacher_output"])

    def project(self, images: Tensor) -> Tensor:
        """The student head's output (N, K), the logits the loss acts on."""
        return self.head(self.backbone(images))
