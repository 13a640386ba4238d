"""Barlow Twins: self-supervised learning by redundancy reduction.

Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, Algorithm 1::

    for x in loader:
        y_a, y_b = augment(x), augment(x)          # two distorted views
        z_a, z_b = f(y_a), f(y_b)                  # encoder + projector, N x D
        z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)
        z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0)
        c = z_a_norm.T @ z_b_norm / N              # D x D cross-correlation
        c_diff = (c - eye(D)).pow(2)
        off_diagonal(c_diff).mul_(lambda)          # lambda = 5e-3 for D = 8192
        loss = c_diff.sum()

The projector has three linear layers (batch norm and ReLU after the first two), as in the
paper; the standardisation over the (global) batch happens in the loss
(:func:`contrastlab.losses.barlow_twins_loss`). The paper's projector is 8192-8192-8192; the
default here is 512-512-512, chosen on the CPU (docs/methods.md, barlow-twins). lambda follows
the width (1 / D, see :mod:`contrastlab.losses.barlow_twins`) unless ``off_diagonal_weight`` is
given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.barlow_twins import barlow_twins_loss, scaled_off_diagonal_weight
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class BarlowTwinsSettings(MethodSettings):
    """Barlow Twins' hyper-parameters."""

    projection_dim: int = common.projection_dim(
        512, "here: measured on the CPU (the paper: 8192)")
    projection_hidden_dim: int = common.projection_hidden_dim(
        512, "here: measured on the CPU (the paper: 8192)")
    off_diagonal_weight: float | None = setting(
        None, "lambda, the weight of the off-diagonal (redundancy) term; none: 1 / D.",
        source="the paper: 5e-3 at D = 8192, i.e. about 1 / D", ge=0)


class BarlowTwins(Method):
    """Barlow Twins with a 3-layer projector and the cross-correlation loss.

    Settings: :class:`BarlowTwinsSettings` (projector widths, lambda).
    """

    name = "barlow-twins"
    Settings = BarlowTwinsSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: BarlowTwinsSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.off_diagonal_weight = (scaled_off_diagonal_weight(s.projection_dim)
                                    if s.off_diagonal_weight is None else s.off_diagonal_weight)
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=3,
                                              last_batch_norm=False)

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The cross-correlation loss of the (global) batch."""
        loss = barlow_twins_loss(embeddings[:, 0], embeddings[:, 1], self.off_diagonal_weight)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projector output z (the space the cross-correlation is computed in)."""
        return self.projection_head(self.backbone(images))
