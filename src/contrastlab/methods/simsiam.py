"""SimSiam: a Siamese network whose predictor output regresses the other view's projection, with a
stop-gradient and no negatives or momentum encoder.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Algorithm 1::

    for x in loader:
        x1, x2 = aug(x), aug(x)
        z1, z2 = f(x1), f(x2)                  # backbone + projection MLP
        p1, p2 = h(z1), h(z2)                  # prediction MLP
        L = D(p1, z2) / 2 + D(p2, z1) / 2      # D(p, z) = -cos(p, z.detach())
        L.backward(); update(f, h)

Projection MLP: 3 layers, BN on every layer including the output (without affine), hidden and
output 2048 in the paper (its ResNet-50 has 2048 features). Prediction MLP: a bottleneck
``Linear -> BN -> ReLU -> Linear``, 512 hidden for 2048 out (a 4x bottleneck, which the paper found
important). Defaults here keep the structure and the 4x bottleneck, scaled for small CPU
backbones: 512 projector hidden/output, 128 predictor hidden. Both views pass through f as one
batch of 2N images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.losses.byol import simsiam_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class SimSiamSettings(MethodSettings):
    """SimSiam's hyper-parameters (the paper's structure and 4x bottleneck, scaled down)."""

    projection_dim: int = common.projection_dim(
        512, "here: the small backbones (the paper: 2048)")
    projection_hidden_dim: int = common.projection_hidden_dim(
        512, "here: the small backbones (the paper: 2048)")
    prediction_hidden_dim: int = common.prediction_hidden_dim(
        128, "here: the paper's 4x bottleneck of projection_dim (the paper: 512)")
    stop_gradient: bool = setting(
        True, "Stop the gradient through the target projection z; off: the paper's ablation, "
        "which collapses (Sec. 4.1, Fig. 2).", source="the paper")


class SimSiam(Method):
    """SimSiam with a 3-layer projector (BN on its output) and a bottleneck predictor.

    Settings: :class:`SimSiamSettings` (projector and predictor widths; ``stop_gradient``
    off for the paper's ablation without the stop-gradient).
    """

    name = "simsiam"
    Settings = SimSiamSettings

    def __init__(self, backbone: Backbone, settings: SimSiamSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=3,
                                              last_batch_norm=True)
        self.prediction_head = ProjectionHead(s.projection_dim, s.prediction_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"SimSiam expects exactly 2 views per image, got {len(views)}")
        n = views[0].shape[0]
        z = self.projection_head(self.backbone(torch.cat(views, dim=0)))
        p = self.prediction_head(z)
        loss = simsiam_loss(p[:n], p[n:], z[:n], z[n:], stop_gradient=self.settings.stop_gradient)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """The projection z = f(x) (backbone + projector), the target of the other view."""
        return self.projection_head(self.backbone(images))


__all__ = ["SimSiam"]
