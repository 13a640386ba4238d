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
in training. Embeddings are gathered across ranks with gradient so the negatives come from the
global batch; every rank computes the loss of the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlab.distributed import gather_with_grad
from contrastlab.losses.triplet import _check_triplet, triplet_loss
from contrastlab.methods.base import Method, StepOutput, per_image
from contrastlab.models import Backbone, ProjectionHead


class Triplet(Method):
    """Self-supervised triplet loss with SimCLR's encoder and projection head.

    Args:
        backbone: encoder f.
        margin: alpha (0.2, FaceNet).
        mining: ``none`` (random negative), ``batch-hard`` or ``semi-hard``.
        projection_dim: output dimension of g.
        projection_hidden_dim: hidden width of g.
    """

    name = "triplet"
    supports_grad_cache = True

    def __init__(
        self,
        backbone: Backbone,
        margin: float = 0.2,
        mining: str = "semi-hard",
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
    ) -> None:
        super().__init__(backbone)
        _check_triplet(margin, mining)
        self.margin = margin
        self.mining = mining
        self.projection_head = ProjectionHead(
            backbone.output_dim, projection_hidden_dim, projection_dim, num_layers=2
        )


    def embed_views(self, views: list[Tensor]) -> Tensor:
        """Projections of all views in one batch, as ``(n, V, D)`` rows per image."""
        if len(views) < 2:
            raise ValueError(f"the triplet loss needs at least 2 views per image, got {len(views)}")
        z = self.projection_head(self.backbone(torch.cat(views, dim=0)))
        return per_image(z, len(views))

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """Mined triplets over the global batch; a view's identity is its image."""
        num_views = embeddings.shape[1]
        per_view = [gather_with_grad(embeddings[:, v]) for v in range(num_views)]
        images = torch.arange(per_view[0].shape[0], device=embeddings.device)
        loss = triplet_loss(torch.cat(per_view), images.repeat(num_views), self.margin,
                            self.mining)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z (normalised by the loss)."""
        return self.projection_head(self.backbone(images))
