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

import torch
from torch import Tensor

from contrastlab.losses.dino import DINOLoss, teacher_temperature_at
from contrastlab.methods._multi_crop import forward_multi_crop
from contrastlab.methods.base import Method, StepOutput
from contrastlab.models import Backbone
from contrastlab.models.dino_head import DINOHead
from contrastlab.models.ema import cosine_momentum, ema_update, make_teacher


class DINO(Method):
    """DINO with multi-crop, an EMA teacher, centring and teacher-temperature warm-up.

    Args:
        backbone: student encoder (the teacher is an EMA copy).
        temperature: student temperature tau_s (0.1).
        teacher_temperature: final teacher temperature tau_t (0.04-0.07 in the paper; 0.07).
        warmup_teacher_temperature: teacher temperature at the start (0.04).
        teacher_temperature_warmup: share of the schedule over which tau_t rises linearly
            (the paper: 30 epochs of a 100-epoch run, 0.3).
        center_momentum: m of the centre update (0.9).
        ema_momentum: base teacher momentum (0.996), raised to 1 on a cosine when ``ema_cosine``.
        ema_cosine: cosine schedule of the teacher momentum (the paper: yes).
        projection_dim: bottleneck of the DINO head (256).
        projection_hidden_dim: hidden width of the head's MLP (the paper: 2048 for ViTs of
            384-768 dims; 512 here for the small ConvNets' 64-256-d features: at 2048 the head
            costs more than the ConvNet's forward and backward).
        num_prototypes: outputs K of the head (the paper: 65,536 for ImageNet; 1024 here,
            about 100 per class on 10-class data at a tenth of the head's cost; pass
            ``--num-prototypes 65536`` for the paper's).
        freeze_prototypes_steps: steps during which the head's last layer gets no gradient (the
            paper freezes it during the first epoch; 50 here, about the first epoch of a small
            run).
        head_batch_norm: batch-normalise the head's hidden layers (the reference code's
            ``use_bn_in_head``, off for its ViTs; on here: without it the ConvNet's all-positive
            features give nearly the same head output for every image and a 2-epoch digits run
            collapsed, std of the normalised outputs 0.005 against 0.067 with it).
    """

    name = "dino"
    num_views = 2
    default_local_crops = 6
    supports_multi_crop = True
    unused_parameters = True  # frozen at first: no gradient under DDP either

    def __init__(
        self,
        backbone: Backbone,
        temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        teacher_temperature_warmup: float = 0.3,
        center_momentum: float = 0.9,
        ema_momentum: float = 0.996,
        ema_cosine: bool = True,
        projection_dim: int = 256,
        projection_hidden_dim: int = 512,
        num_prototypes: int = 1024,
        freeze_prototypes_steps: int = 50,
        head_batch_norm: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.teacher_temperature_warmup = teacher_temperature_warmup
        self.ema_momentum = ema_momentum
        self.ema_cosine = ema_cosine
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.head = DINOHead(backbone.output_dim, projection_hidden_dim, projection_dim,
                             num_prototypes, batch_norm=head_batch_norm)
        self.teacher_backbone = make_teacher(backbone)
        self.teacher_head = make_teacher(self.head)
        self.criterion = DINOLoss(num_prototypes, temperature, center_momentum)
        self._pending_teacher_output: Tensor | None = None

    def current_teacher_temperature(self) -> float:
        """tau_t at the current progress (linear warm-up, then constant)."""
        return teacher_temperature_at(self.progress, self.warmup_teacher_temperature,
                                      self.teacher_temperature, self.teacher_temperature_warmup)

    def current_ema_momentum(self) -> float:
        """Teacher momentum at the current progress (cosine from the base value to 1)."""
        if self.ema_cosine:
            return cosine_momentum(self.ema_momentum, self.progress)
        return self.ema_momentum

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
        self._pending_teacher_output = teacher
        return StepOutput(loss=loss, metrics={"teacher_temperature": tau_t,
                                              "ema_momentum": self.current_ema_momentum()})

    def on_step_end(self, step: int, progress: float) -> None:
        """Teacher EMA update, then the centre update from this step's teacher outputs."""
        self.progress = progress
        momentum = self.current_ema_momentum()
        ema_update(self.teacher_backbone, self.backbone, momentum)
        ema_update(self.teacher_head, self.head, momentum)
        pending, self._pending_teacher_output = self._pending_teacher_output, None
        if pending is not None:
            self.criterion.update_center(pending)

    def project(self, images: Tensor) -> Tensor:
        """The student head's output (N, K), the logits the loss acts on."""
        return self.head(self.backbone(images))
