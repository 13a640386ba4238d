"""BYOL: an online network predicts a slowly moving target network's projection of another view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, Sec. 3.1 and Algorithm 1::

    for x in loader:
        v, v' = t(x), t'(x)
        z  = g_theta(f_theta(v)),  p  = q_theta(z)        # online: encoder, projector, predictor
        z' = g_xi(f_xi(v')),       p' = q_theta(g_theta(f_theta(v')))
        t  = g_xi(f_xi(v)),        t' = z'                 # target projections (no gradient)
        loss = (2 - 2 cos(p, t')) + (2 - 2 cos(p', t))     # symmetrised, mean over the batch
        update(theta)
        xi = tau * xi + (1 - tau) * theta                  # EMA target

tau rises from 0.996 to 1 on a cosine over training, tau_k = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2.
Projector and predictor are ``Linear -> BN -> ReLU -> Linear`` MLPs, 4096 hidden and 256 out in
the paper (for a ResNet-50's 2048 features); the defaults here are 1024 hidden and 256 out, for
the small backbones this library trains on CPU (``--projection-hidden-dim 4096
--prediction-hidden-dim 4096`` gives the paper's). Both views pass through the online network as
one batch of 2N images (one forward); the target network sees the same 2N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.losses.byol import byol_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.models.momentum_teacher import MomentumTeacher


@dataclass
class BYOLSettings(MethodSettings):
    """BYOL's hyper-parameters."""

    projection_dim: int = common.projection_dim(256, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(
        1024, "here: the small backbones (the paper: 4096)")
    prediction_hidden_dim: int = common.prediction_hidden_dim(
        1024, "here: the small backbones (the paper: 4096)")
    ema_momentum: float = common.ema_momentum(0.996, "the paper (tau_base)")
    ema_cosine: bool = common.ema_cosine(True, "the paper")


class BYOL(Method):
    """BYOL with an EMA target network and a symmetrised normalised-MSE loss (settings:
    :class:`BYOLSettings`)."""

    name = "byol"
    Settings = BYOLSettings

    def __init__(self, backbone: Backbone, settings: BYOLSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.ema_momentum, self.ema_cosine = s.ema_momentum, s.ema_cosine
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)
        self.prediction_head = ProjectionHead(s.projection_dim, s.prediction_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)
        self.momentum_teacher = MomentumTeacher(s.ema_momentum, s.ema_cosine)
        self.target_backbone = self.momentum_teacher.copy_of(backbone)
        self.target_projection_head = self.momentum_teacher.copy_of(self.projection_head)

    def current_ema_momentum(self) -> float:
        """tau at the current progress."""
        return self.momentum_teacher.momentum(self.progress)

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"BYOL expects exactly 2 views per image, got {len(views)}")
        n = views[0].shape[0]
        images = torch.cat(views, dim=0)
        p = self.prediction_head(self.projection_head(self.backbone(images)))
        with torch.no_grad():
            targets = self.target_projection_head(self.target_backbone(images))
        loss = byol_loss(p[:n], p[n:], targets[:n], targets[n:])
        return StepOutput(loss=loss, metrics={"ema_momentum": self.current_ema_momentum()})

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """xi <- tau xi + (1 - tau) theta for the target encoder and projector."""
        self.progress = progress
        self.momentum_teacher.update(progress)

    def project(self, images: Tensor) -> Tensor:
        """The online projection z = g_theta(f_theta(x))."""
        return self.projection_head(self.backbone(images))


__all__ = ["BYOL"]
