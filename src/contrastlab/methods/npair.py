"""Multi-class N-pair loss, the classical baseline between triplets and InfoNCE.

Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016::

    for N pairs {(x_i, x_i+)}:                       # here: two views of N images
        f_i, f_i+ = g(f(x_i)), g(f(x_i+))            # unnormalised embeddings
        L = mean_i log(1 + sum_{j != i} exp(f_i.f_j+ - f_i.f_i+)) + lambda * mean |f|^2

Each anchor is pulled to its own positive and pushed from the other N - 1 pairs' positives in one
softmax. The embeddings are not normalised (no temperature); the L2 penalty keeps their norms
small (lambda = 0.002, see :func:`contrastlab.losses.npair_loss`). The paper's loss is
asymmetric (anchors vs positives); with two views it is averaged over both directions here. The
projection head has no final batch norm, so the penalty acts on the norm the loss sees.
Under DDP the loss takes its negatives from every rank's positives (gathered with gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.triplet import npair_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class NPairSettings(MethodSettings):
    """The N-pair method's hyper-parameters."""

    projection_dim: int = common.projection_dim(128, "SimCLR's")
    projection_hidden_dim: int = common.projection_hidden_dim(512, "SimCLR's width here")
    l2_weight: float = setting(0.002, "lambda of the penalty on the embeddings' squared norms.",
                               source="the paper", ge=0)


class NPair(Method):
    """Self-supervised multi-class N-pair loss, symmetrised over the two views.

    Settings: :class:`NPairSettings` (projection head widths, lambda).
    """

    name = "npair"
    Settings = NPairSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: NPairSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.l2_weight = s.l2_weight
        self.projection_head = ProjectionHead(
            backbone.output_dim, s.projection_hidden_dim, s.projection_dim, num_layers=2,
            last_batch_norm=False,
        )

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The symmetrised N-pair loss over the global batch."""
        z1, z2 = embeddings[:, 0], embeddings[:, 1]
        loss = 0.5 * (npair_loss(z1, z2, self.l2_weight) + npair_loss(z2, z1, self.l2_weight))
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output f (unnormalised; the space the loss acts on)."""
        return self.projection_head(self.backbone(images))
