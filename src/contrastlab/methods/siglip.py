"""SigLIP: two encoders trained on paired data with a pairwise sigmoid loss instead of a softmax.

Zhai, Mustafa, Kolesnikov & Beyer, "Sigmoid Loss for Language Image Pre-Training", ICCV 2023,
Algorithm 1::

    zimg = l2_normalize(img_emb); ztxt = l2_normalize(txt_emb)     # the two towers, projected
    logits = dot(zimg, ztxt.T) * t + b                              # t = exp(t'), t' init log 10
    labels = 2 * eye(n) - ones(n)                                   # +1 on the diagonal, else -1
    loss = -sum(log_sigmoid(labels * logits)) / n                   # b init -10

Every pair is an independent binary classification, so no normalisation over the batch is
needed; the bias b = -10 starts the model near the prior that most pairs are negative. Here the
pairs are two augmented views of an image through two separately initialised towers until the
image-text data path exists (see :mod:`contrastlab.methods.two_tower`).

``temperature`` follows the library's convention (logits = cosine / temperature, as for CLIP):
the paper's t = 10 is ``temperature = 0.1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastlab.losses.clip import SIGLIP_INIT_BIAS, SIGLIP_INIT_TEMPERATURE, SigLIPLoss
from contrastlab.methods.base import StepOutput
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models import Backbone


class SigLIP(TwoTowerMethod):
    """Two towers with linear projections and the sigmoid loss with learnable t and b.

    Args:
        backbone: tower A's encoder (evaluated).
        temperature: initial 1 / t (0.1, i.e. the paper's t = 10); learned.
        projection_dim: width of the joint embedding space.
        bias: initial b (-10 in the paper); learned.
        tower_b: tower B's encoder; default a freshly initialised copy of ``backbone``.
    """

    name = "siglip"

    def __init__(self, backbone: Backbone, temperature: float = 1.0 / SIGLIP_INIT_TEMPERATURE,
                 projection_dim: int = 128, bias: float = SIGLIP_INIT_BIAS,
                 tower_b: nn.Module | None = None) -> None:
        super().__init__(backbone, projection_dim, tower_b)
        self.loss = SigLIPLoss(init_scale=1.0 / temperature, init_bias=bias)

    def pair_loss(self, embeddings_a: Tensor, embeddings_b: Tensor) -> StepOutput:
        loss = self.loss(embeddings_a, embeddings_b)
        return StepOutput(loss=loss, metrics={
            "siglip_t": float(self.loss.log_temperature.detach().exp()),
            "siglip_bias": float(self.loss.bias.detach()),
        })
