"""NNCLR: contrastive learning whose positive is the nearest neighbour of a view in a support set.

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021, Eq. 2-3::

    for x in loader:
        z1, z2 = g(f(aug(x))), g(f(aug(x)))        # projections, N x d
        p1, p2 = h(z1), h(z2)                      # predictions, N x d
        nn1 = NN(z1, Q), nn2 = NN(z2, Q)           # cosine nearest neighbours in the support set
        L = InfoNCE(rows=nn1, cols=p2) / 2 + InfoNCE(rows=nn2, cols=p1) / 2
        update(f, g, h)
        enqueue(Q, normalize(z1))                  # after the loss; FIFO

    InfoNCE(rows=a, cols=b)_i = -log exp(a_i . b_i / tau) / sum_k exp(a_i . b_k / tau)

tau = 0.1. The neighbour is a stored vector, so no gradient flows through it; the projector learns
through the predictor. Heads: projection MLP 3 layers with BN (2048 hidden, 256 out in the paper),
prediction MLP 2 layers (4096 hidden); defaults here 1024 hidden and 256 out for small CPU
backbones. Support set: 98,304 in the paper for ImageNet's 1.28M images (about 8% of an epoch);
the default here is 4096, for small data sets (docs/methods.md, nnclr). Before the first enqueue
the support set is empty and each view is its own neighbour (SimCLR-like with a predictor), for
that one step only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.distributed import gather_no_grad
from contrastlab.errors import ConfigError
from contrastlab.losses.moco import in_batch_info_nce
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.models.nearest_neighbour import nearest_neighbours
from contrastlab.models.queue import FeatureQueue


@dataclass
class NNCLRSettings(MethodSettings):
    """NNCLR's hyper-parameters."""

    temperature: float = common.temperature(0.1, "the paper")
    projection_dim: int = common.projection_dim(256, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(
        1024, "here: the small backbones (the paper: 2048)")
    prediction_hidden_dim: int = common.prediction_hidden_dim(
        1024, "here: the small backbones (the paper: 4096)")
    queue_size: int = common.queue_size(
        4096, "Size of the support set of past projections.",
        "here: about half an epoch of the small data sets (the paper: 98,304 for ImageNet)")


class NNCLR(Method):
    """NNCLR with a FIFO support set of L2-normalised projections (settings:
    :class:`NNCLRSettings`)."""

    name = "nnclr"
    Settings = NNCLRSettings

    def __init__(self, backbone: Backbone, settings: NNCLRSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        if s.queue_size < 1:
            raise ConfigError(
                f"nnclr takes its positives from a support set: queue_size must be >= 1, got "
                f"{s.queue_size}; use --queue-size 4096 or so"
            )
        self.temperature = s.temperature
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=3,
                                              last_batch_norm=True)
        self.prediction_head = ProjectionHead(s.projection_dim, s.prediction_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)
        self.support = FeatureQueue(s.queue_size, s.projection_dim, normalize_init=True)

    def neighbours(self, z: Tensor) -> Tensor:
        """NN(z, Q): the support vector nearest (cosine) to each row; z itself while Q is empty."""
        support = self.support.valid()
        if support.shape[0] == 0:
            return F.normalize(z.detach().float(), dim=1)
        return nearest_neighbours(z, support)[0]

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"NNCLR expects exactly 2 views per image, got {len(views)}")
        n = views[0].shape[0]
        z = self.projection_head(self.backbone(torch.cat(views, dim=0)))
        p = self.prediction_head(z)
        z1, z2 = z[:n], z[n:]
        nn1, nn2 = self.neighbours(z1), self.neighbours(z2)
        # the loss contrasts with every rank's predictions (gathered with gradient)
        loss = 0.5 * (in_batch_info_nce(nn1, p[n:], self.temperature)
                      + in_batch_info_nce(nn2, p[:n], self.temperature))
        new_support = gather_no_grad(F.normalize(z1.detach().float(), dim=1))  # every rank's
        return StepOutput(loss=loss, after_step={"projections": new_support})

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """enqueue(Q, normalize(z1)): the step's first-view projections enter the support set."""
        self.support.enqueue(output.after_step["projections"])

    def project(self, images: Tensor) -> Tensor:
        """The projection z = g(f(x)) (the space of the support set)."""
        return self.projection_head(self.backbone(images))


__all__ = ["NNCLR"]
