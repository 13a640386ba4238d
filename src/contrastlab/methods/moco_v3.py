"""MoCo v3: symmetrised InfoNCE between predicted queries and momentum keys of the same batch.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
Algorithm 1::

    f_k.params = f_q.params                    # f_q: backbone + projection + prediction head
    for x in loader:                           # f_k: backbone + projection head (momentum)
        x1, x2 = aug(x), aug(x)
        q1, q2 = f_q(x1), f_q(x2)              # queries, N x C
        k1, k2 = f_k(x1), f_k(x2)              # keys, N x C (no gradient)
        loss = ctr(q1, k2) + ctr(q2, k1)
        update(f_q)
        f_k = m * f_k + (1 - m) * f_q

    def ctr(q, k):
        logits = mm(q, k.t())                  # N x N (keys gathered from all ranks under DDP)
        return CrossEntropyLoss(logits / tau, labels=range(N)) * (2 * tau)

No queue: the other keys of the (global) batch are the negatives. Heads as in the paper: a 3-layer
projection MLP (BN on every layer, the last one without affine) and a 2-layer prediction MLP,
hidden width 4096 and output 256 in the paper; the defaults here are 1024 and 256 for the small
backbones this library trains on CPU (``--projection-hidden-dim 4096 --prediction-hidden-dim
4096`` gives the paper's). tau = 0.2 (the paper's ViT value; its ResNet-50 recipe uses 1.0);
m = 0.99 raised to 1 on a cosine over training, as in the paper. Each view is one forward pass,
so batch statistics are per view, as in the reference code (there, synchronised across GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.losses.moco import moco_v3_info_nce
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.models.momentum_teacher import MomentumTeacher


@dataclass
class MoCoV3Settings(MethodSettings):
    """MoCo v3's hyper-parameters."""

    temperature: float = common.temperature(0.2, "here (the paper's ResNet recipe: 1.0)")
    projection_dim: int = common.projection_dim(256, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(
        1024, "here: the small backbones (the paper: 4096)")
    prediction_hidden_dim: int = common.prediction_hidden_dim(
        1024, "here: the small backbones (the paper: 4096)")
    ema_momentum: float = common.ema_momentum(0.99, "the paper")
    ema_cosine: bool = common.ema_cosine(True, "the paper")


class MoCoV3(Method):
    """MoCo v3 (ResNet/ConvNet form) with in-batch keys and a prediction head (settings:
    :class:`MoCoV3Settings`)."""

    name = "moco-v3"
    Settings = MoCoV3Settings

    def __init__(self, backbone: Backbone, settings: MoCoV3Settings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.temperature = s.temperature
        self.ema_momentum, self.ema_cosine = s.ema_momentum, s.ema_cosine
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=3,
                                              last_batch_norm=True)
        self.prediction_head = ProjectionHead(s.projection_dim, s.prediction_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)
        self.momentum_teacher = MomentumTeacher(s.ema_momentum, s.ema_cosine)
        self.momentum_backbone = self.momentum_teacher.copy_of(backbone)
        self.momentum_projection_head = self.momentum_teacher.copy_of(self.projection_head)

    def current_ema_momentum(self) -> float:
        """m at the current progress."""
        return self.momentum_teacher.momentum(self.progress)

    def _query(self, images: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(images)))

    @torch.no_grad()
    def _key(self, images: Tensor) -> Tensor:
        return self.momentum_projection_head(self.momentum_backbone(images))

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"MoCo v3 expects exactly 2 views per image, got {len(views)}")
        x1, x2 = views
        q1, q2 = self._query(x1), self._query(x2)
        k1, k2 = self._key(x1), self._key(x2)  # the loss gathers every rank's keys
        loss = (moco_v3_info_nce(q1, k2, self.temperature)
                + moco_v3_info_nce(q2, k1, self.temperature))
        return StepOutput(loss=loss, metrics={"ema_momentum": self.current_ema_momentum()})

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """f_k = m f_k + (1 - m) f_q for the momentum backbone and projector."""
        self.progress = progress
        self.momentum_teacher.update(progress)

    def project(self, images: Tensor) -> Tensor:
        """The projector's output (the space the momentum keys live in)."""
        return self.projection_head(self.backbone(images))


__all__ = ["MoCoV3"]
