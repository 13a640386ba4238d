"""CLIP: contrastive pre-training of two encoders on paired data with a symmetric InfoNCE loss.

Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger & Sutskever,
"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021, Figure 3::

    I_f = image_encoder(I); T_f = text_encoder(T)            # the two towers
    I_e = l2_normalize(I_f @ W_i); T_e = l2_normalize(T_f @ W_t)
    logits = I_e @ T_e.T * exp(t)                             # t learnable, init log(1/0.07)
    labels = arange(n)
    loss = (cross_entropy(logits, labels, axis=0) + cross_entropy(logits, labels, axis=1)) / 2

The logit scale exp(t) is clipped at 100 (Sec. 2.5): in the loss (no gradient beyond it) and on
the parameter after every optimiser step. Here the pairs are two augmented views of an image
through two separately initialised towers until the image-text data path exists
(see :mod:`contrastlab.methods.two_tower`).
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastlab.losses.clip import CLIP_INIT_TEMPERATURE, CLIPLoss, clip_logit_scale
from contrastlab.methods.base import StepOutput
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models import Backbone


class CLIP(TwoTowerMethod):
    """Two towers with linear projections and CLIP's loss with a learnable temperature.

    Args:
        backbone: tower A's encoder (evaluated).
        temperature: the initial temperature 1 / exp(t) (0.07 in the paper); learned.
        projection_dim: width of the joint embedding space.
        tower_b: tower B's encoder; default a freshly initialised copy of ``backbone``.
    """

    name = "clip"

    def __init__(self, backbone: Backbone, temperature: float = CLIP_INIT_TEMPERATURE,
                 projection_dim: int = 128, tower_b: nn.Module | None = None) -> None:
        super().__init__(backbone, projection_dim, tower_b)
        self.loss = CLIPLoss(temperature)

    def pair_loss(self, embeddings_a: Tensor, embeddings_b: Tensor) -> StepOutput:
        loss = self.loss(embeddings_a, embeddings_b)
        scale = float(clip_logit_scale(self.loss.log_scale.detach()))
        return StepOutput(loss=loss, metrics={"logit_scale": scale})

    def on_step_end(self, step: int, progress: float) -> None:
        self.loss.clip_scale()
