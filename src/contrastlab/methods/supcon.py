"""SupCon: supervised contrastive learning.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu & Krishnan, NeurIPS 2020, Sec. 3::

    for minibatch {x_k, y_k}, k = 1..N:
        two augmentations per image -> 2N views, labels repeated
        z = normalise(Proj(Enc(views)))             # 2N x D on the unit sphere
        for every anchor i: positives P(i) = other views with label y_i (including its own
            other view), all others A(i) = every view but i
        L = mean_i -1/|P(i)| sum_{p in P(i)}
                       log( exp(z_i.z_p / T) / sum_{a in A(i)} exp(z_i.z_a / T) )

Same encoder, 2-layer projection head and two-view batch as SimCLR; the labels turn every view
of the same class into a positive. T = 0.1 (the paper's). With no labels the loss reduces to
SimCLR's NT-Xent, so the trainer refuses unlabelled data and points to ``--method simclr``.

``num_views`` (``--num-views``, default 2 as in the paper) sets the views per image: the equation
is the same for any number (Sec. 3.1's multiviewed batch), and with 1 view the labels alone give
the positives, at twice the images per second of two views (an anchor whose class appears once
in the batch has no positive and is left out of the mean).

Distributed: the loss contrasts each rank's views with every rank's views and labels (gathered,
the embeddings with gradient), so every view of the global batch is an anchor and a contrast
view, and DDP's gradient average gives the global batch's exact gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.supcon import supcon_loss_views
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class SupConSettings(MethodSettings):
    """SupCon's hyper-parameters."""

    temperature: float = common.temperature(0.1, "the paper")
    projection_dim: int = common.projection_dim(128, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(512, "SimCLR's width here")
    num_views: int = setting(2, "Augmented views per image (1: the labels alone give the "
                             "positives).", source="the paper", ge=1)


class SupCon(Method):
    """Supervised contrastive learning (L_out) with SimCLR's projection head.

    Settings: :class:`SupConSettings` (temperature T, head widths, views per image).
    """

    name = "supcon"
    Settings = SupConSettings
    uses_labels = True
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: SupConSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.num_views = s.num_views
        self.temperature = s.temperature
        self.projection_head = ProjectionHead(
            backbone.output_dim, s.projection_hidden_dim, s.projection_dim, num_layers=2
        )

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """L_out over the global batch (the loss gathers every rank's views and labels)."""
        views = [embeddings[:, v] for v in range(embeddings.shape[1])]
        return StepOutput(loss=supcon_loss_views(views, labels, self.temperature))

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output (the space the loss acts on)."""
        return self.projection_head(self.backbone(images))
