"""DCL: decoupled contrastive learning (the positive pair removed from the denominator).

Yeh, Hong, Hsu, Liu, Chen & LeCun, ECCV 2022::

    for minibatch {x_k}, k = 1..N:
        two augmentations per image, z = normalise(g(f(views)))     # 2N x D, as SimCLR
        for every anchor i with positive j (the other view of its image):
            l_i = -z_i.z_j / T + log sum_{k != i, k != j} exp(z_i.z_k / T)
        L = mean_i l_i

Identical to SimCLR except for the loss: without the positive in the denominator the gradient
loses NT-Xent's negative-positive coupling factor, which matters most with small batches. T = 0.1
(the paper's). The loss gathers every rank's embeddings with gradient, so the negatives are the
whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.dcl import dcl_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead


@dataclass
class DCLSettings(MethodSettings):
    """DCL's hyper-parameters."""

    temperature: float = common.temperature(0.1, "the paper")
    projection_dim: int = common.projection_dim(128, "SimCLR's")
    projection_hidden_dim: int = common.projection_hidden_dim(512, "SimCLR's width here")


class DCL(Method):
    """Decoupled contrastive learning with SimCLR's encoder and projection head.

    Settings: :class:`DCLSettings` (temperature T, projection head widths).
    """

    name = "dcl"
    Settings = DCLSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: DCLSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.temperature = s.temperature
        self.projection_head = ProjectionHead(
            backbone.output_dim, s.projection_hidden_dim, s.projection_dim, num_layers=2
        )

    def weight_sigma_or_none(self) -> float | None:
        """sigma of DCLW's weighting function; None: unweighted DCL."""
        return None

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The decoupled loss over the global batch (the loss gathers every rank's views)."""
        loss = dcl_loss(embeddings[:, 0], embeddings[:, 1], self.temperature,
                        self.weight_sigma_or_none())
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z (the space the loss acts on)."""
        return self.projection_head(self.backbone(images))
