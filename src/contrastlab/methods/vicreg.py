"""VICReg: variance-invariance-covariance regularisation.

Bardes, Ponce & LeCun, ICLR 2022, Algorithm 1::

    for x in loader:
        x_a, x_b = augment(x), augment(x)          # two random views
        z_a, z_b = f(x_a), f(x_b)                  # encoder + expander, N x D
        sim_loss = mse_loss(z_a, z_b)              # invariance
        std_z_a = sqrt(z_a.var(dim=0) + 1e-04)
        std_z_b = sqrt(z_b.var(dim=0) + 1e-04)
        std_loss = mean(relu(1 - std_z_a)) + mean(relu(1 - std_z_b))   # variance
        z_a, z_b = z_a - z_a.mean(0), z_b - z_b.mean(0)
        cov_z_a, cov_z_b = (z_a.T @ z_a) / (N - 1), (z_b.T @ z_b) / (N - 1)
        cov_loss = off_diagonal(cov_z_a).pow(2).sum() / D
                 + off_diagonal(cov_z_b).pow(2).sum() / D                 # covariance
        loss = lambda * sim_loss + mu * std_loss + nu * cov_loss          # 25, 25, 1

The expander has three linear layers (batch norm and ReLU after the first two), as in the paper,
whose expander is 8192-8192-8192; the default here is 512-512-512, chosen on the CPU
(docs/methods.md, vicreg). Statistics are over the global batch
(:func:`contrastlab.losses.vicreg_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.vicreg import vicreg_terms
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class VICRegSettings(MethodSettings):
    """VICReg's hyper-parameters."""

    projection_dim: int = common.projection_dim(512, "here: measured on the CPU (the paper: "
                                                "8192)")
    projection_hidden_dim: int = common.projection_hidden_dim(
        512, "here: measured on the CPU (the paper: 8192)")
    invariance_weight: float = setting(25.0, "lambda, the weight of the invariance term.",
                                       source="the paper", ge=0)
    variance_weight: float = setting(25.0, "mu, the weight of the variance term.",
                                     source="the paper", ge=0)
    covariance_weight: float = setting(1.0, "nu, the weight of the covariance term.",
                                       source="the paper", ge=0)


class VICReg(Method):
    """VICReg with a 3-layer expander.

    Settings: :class:`VICRegSettings` (expander widths, the three weights).
    """

    name = "vicreg"
    Settings = VICRegSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: VICRegSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.invariance_weight = s.invariance_weight
        self.variance_weight = s.variance_weight
        self.covariance_weight = s.covariance_weight
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=3,
                                              last_batch_norm=False)

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The weighted invariance, variance and covariance terms of the (global) batch."""
        terms = vicreg_terms(embeddings[:, 0], embeddings[:, 1])
        loss = (self.invariance_weight * terms.invariance + self.variance_weight * terms.variance
                + self.covariance_weight * terms.covariance)
        metrics = {name: float(value.detach()) for name, value in terms._asdict().items()}
        return StepOutput(loss=loss, metrics=metrics)

    def project(self, images: Tensor) -> Tensor:
        """Expander output z (the space the three terms act on)."""
        return self.projection_head(self.backbone(images))
