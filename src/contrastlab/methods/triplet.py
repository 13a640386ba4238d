"""Triplet loss with mining, the classical metric-learning baseline, made self-supervised.

Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015 (loss, semi-hard mining) and Hermans,
Beyer & Leibe, 2017 (batch-hard mining)::

    for minibatch {x_k}, k = 1..N:
        two augmentations per image, z = normalise(g(f(views)))     # 2N x D
        identity of a view = its image: positive = the other view, negatives = other images
        mine one negative per (anchor, positive): random | batch-hard | semi-hard
        L = mean over triplets of [ |z_a - z_p|^2 - |z_a - z_n|^2 + margin ]_+

Margin 0.2 on L2-normalised embeddings with squared distances (FaceNet's value). Semi-hard
mining is the default: FaceNet reports that the hardest negatives can collapse the model early
in training. Under DDP the loss mines among every rank's views (gathered with gradient), so the
negatives come from the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.distributed import global_index
from contrastlab.losses.triplet import MINING, triplet_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput, per_image
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class TripletSettings(MethodSettings):
    """The triplet method's hyper-parameters."""

    margin: float = setting(0.2, "Margin alpha between positive and negative distances.",
                            source="FaceNet", gt=0)
    mining: str = setting("semi-hard", "Negative mining: none (random), batch-hard or "
                          "semi-hard.", source="FaceNet", choices=MINING)
    projection_dim: int = common.projection_dim(128, "SimCLR's")
    projection_hidden_dim: int = common.projection_hidden_dim(512, "SimCLR's width here")


class Triplet(Method):
    """Self-supervised triplet loss with SimCLR's encoder and projection head.

    Settings: :class:`TripletSettings` (margin, mining, head widths).
    """

    name = "triplet"
    Settings = TripletSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: TripletSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.margin = s.margin
        self.mining = s.mining
        self.projection_head = ProjectionHead(
            backbone.output_dim, s.projection_hidden_dim, s.projection_dim, num_layers=2
        )

    def embed_views(self, views: list[Tensor]) -> Tensor:
        """Projections of all views in one batch, as ``(n, V, D)`` rows per image."""
        if len(views) < 2:
            raise ValueError(f"the triplet loss needs at least 2 views per image, got {len(views)}")
        z = self.projection_head(self.backbone(torch.cat(views, dim=0)))
        return per_image(z, len(views))

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """Mined triplets over the global batch; a view's identity is its image."""
        n, num_views = embeddings.shape[:2]
        # image by image, so every rank's rows gathered are the global batch's in one order
        images = global_index(n, embeddings.device).repeat_interleave(num_views)
        loss = triplet_loss(embeddings.flatten(0, 1), images, self.margin, self.mining)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z (normalised by the loss)."""
        return self.projection_head(self.backbone(images))
