"""DCLW: decoupled contrastive learning with a weighted positive term.

Yeh, Hong, Hsu, Liu, Chen & LeCun, ECCV 2022: DCL's loss with the positive term of image n
multiplied by a negative von Mises-Fisher weight

    w_n = 2 - exp(z1_n.z2_n / sigma) / mean_m exp(z1_m.z2_m / sigma),    sigma = 0.5

so positive pairs that already agree more than the batch average pull less and hard positives
(views far apart) pull more. Everything else is :class:`contrastlab.methods.dcl.DCL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrastlab.methods.dcl import DCL, DCLSettings
from contrastlab.models import Backbone
from contrastlab.settings import setting


@dataclass
class DCLWSettings(DCLSettings):
    """DCLW's hyper-parameters: DCL's and the weighting function's sigma."""

    weight_sigma: float = setting(0.5, "sigma of DCLW's weighting of the positive pair.",
                                  source="the paper", gt=0)


class DCLW(DCL):
    """DCL with the weighting function of the positive pair.

    Settings: :class:`DCLWSettings` (DCL's and ``weight_sigma``).
    """

    name = "dclw"
    Settings = DCLWSettings

    def __init__(self, backbone: Backbone, settings: DCLWSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        self.weight_sigma = self.settings.weight_sigma

    def weight_sigma_or_none(self) -> float | None:
        return self.weight_sigma
