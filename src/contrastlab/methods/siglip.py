"""SigLIP: two encoders trained on paired data with a pairwise sigmoid loss instead of a softmax.

Zhai, Mustafa, Kolesnikov & Beyer, "Sigmoid Loss for Language Image Pre-Training", ICCV 2023,
Algorithm 1::

    zimg = l2_normalize(img_emb); ztxt = l2_normalize(txt_emb)     # the two towers, projected
    logits = dot(zimg, ztxt.T) * t + b                              # t = exp(t'), t' init log 10
    labels = 2 * eye(n) - ones(n)                                   # +1 on the diagonal, else -1
    loss = -sum(log_sigmoid(labels * logits)) / n                   # b init -10

Every pair is an independent binary classification, so no normalisation over the batch is
needed; the bias b = -10 starts the model near the prior that most pairs are negative. The pairs
are images and their captions (an image tower and a text tower,
:mod:`contrastlab.methods.image_text`), or on image data two augmented views of an image through
two separately initialised image towers (see :mod:`contrastlab.methods.two_tower`).

``temperature`` follows the library's convention (logits = cosine / temperature, as for CLIP):
the paper's t = 10 is ``temperature = 0.1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from contrastlab.losses.clip import SIGLIP_INIT_BIAS, SIGLIP_INIT_TEMPERATURE, SigLIPLoss
from contrastlab.methods.base import StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models import Backbone
from contrastlab.settings import setting


@dataclass
class SigLIPSettings(MethodSettings):
    """SigLIP's hyper-parameters."""

    temperature: float = setting(
        1.0 / SIGLIP_INIT_TEMPERATURE, "Initial temperature 1 / t; learned during training.",
        source="the paper (t = 10)", gt=0)
    projection_dim: int = setting(128, "Width of the joint embedding space of the two towers.",
                                  source="here", ge=1)
    bias: float = setting(SIGLIP_INIT_BIAS, "Initial bias b of the sigmoid logits; learned.",
                          source="the paper")


class SigLIP(TwoTowerMethod):
    """Two towers with linear projections and the sigmoid loss with learnable t and b.

    Args:
        backbone: tower A's encoder (evaluated).
        settings: :class:`SigLIPSettings` (initial 1 / t and b, joint width).
        tower_b: tower B's encoder; default a freshly initialised copy of ``backbone``.
    """

    name = "siglip"
    Settings = SigLIPSettings

    def __init__(self, backbone: Backbone, settings: SigLIPSettings | None = None,
                 tower_b: nn.Module | None = None, **overrides: Any) -> None:
        super().__init__(backbone, settings, tower_b, **overrides)
        s = self.settings
        self.loss = SigLIPLoss(init_scale=1.0 / s.temperature, init_bias=s.bias)

    def pair_loss(self, embeddings_a: Tensor, embeddings_b: Tensor) -> StepOutput:
        loss = self.loss(embeddings_a, embeddings_b)
        return StepOutput(loss=loss, metrics={
            "siglip_t": float(self.loss.log_temperature.detach().exp()),
            "siglip_bias": float(self.loss.bias.detach()),
        })
