"""DCLW: decoupled contrastive learning with a weighted positive term.

Yeh, Hong, Hsu, Liu, Chen & LeCun, ECCV 2022: DCL's loss with the positive term of image n
multiplied by a negative von Mises-Fisher weight

    w_n = 2 - exp(z1_n.z2_n / sigma) / mean_m exp(z1_m.z2_m / sigma),    sigma = 0.5

so positive pairs that already agree more than the batch average pull less and hard positives
(views far apart) pull more. Everything else is :class:`contrastlab.methods.dcl.DCL`.
"""

from __future__ import annotations

from contrastlab.errors import ConfigError
from contrastlab.methods.dcl import DCL
from contrastlab.models import Backbone


class DCLW(DCL):
    """DCL with the weighting function of the positive pair.

    Args:
        backbone: encoder f.
        temperature: T (0.1 in the paper).
        weight_sigma: sigma of the weighting function (0.5 in the paper).
        projection_dim: output dimension of g.
        projection_hidden_dim: hidden width of g.
    """

    name = "dclw"

    def __init__(
        self,
        backbone: Backbone,
        temperature: float = 0.1,
        weight_sigma: float = 0.5,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
    ) -> None:
        super().__init__(backbone, temperature, projection_dim, projection_hidden_dim)
        if not weight_sigma > 0:
            raise ConfigError(f"weight_sigma must be > 0, got {weight_sigma}")
        self.weight_sigma = weight_sigma

    def weight_sigma_or_none(self) -> float | None:
        return self.weight_sigma
