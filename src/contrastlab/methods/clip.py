"""CLIP: contrastive pre-training of two encoders on paired data with a symmetric InfoNCE loss.

Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger & Sutskever,
"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021, Figure 3::

    I_f = image_encoder(I); T_f = text_encoder(T)            # the two towers
    I_e = l2_normalize(I_f @ W_i); T_e = l2_normalize(T_f @ W_t)
    logits = I_e @ T_e.T * exp(t)                             # t learnable, init log(1/0.07)
    labels = arange(n)
    loss = (cross_entropy(logits, labels, axis=0) + cross_entropy(logits, labels, axis=1)) / 2

The logit scale exp(t) is clipped at 100 (Sec. 2.5): in the loss (no gradient beyond it) and on
the parameter after every optimiser step. The pairs are images and their captions (an image
tower and a text tower, :mod:`contrastlab.methods.image_text`), or on image data two augmented
views of an image through two separately initialised image towers
(see :mod:`contrastlab.methods.two_tower`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from contrastlab.losses.clip import CLIP_INIT_TEMPERATURE, CLIPLoss, clip_logit_scale
from contrastlab.methods.base import StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models import Backbone
from contrastlab.settings import setting


@dataclass
class CLIPSettings(MethodSettings):
    """CLIP's hyper-parameters."""

    temperature: float = setting(
        CLIP_INIT_TEMPERATURE, "Initial temperature 1 / exp(t); learned during training.",
        source="the paper (0.07)", gt=0)
    projection_dim: int = setting(128, "Width of the joint embedding space of the two towers.",
                                  source="here", ge=1)


class CLIP(TwoTowerMethod):
    """Two towers with linear projections and CLIP's loss with a learnable temperature.

    Args:
        backbone: tower A's encoder (evaluated).
        settings: :class:`CLIPSettings` (initial temperature, joint width).
        tower_b: tower B's encoder; default a freshly initialised copy of ``backbone``.
    """

    name = "clip"
    Settings = CLIPSettings

    def __init__(self, backbone: Backbone, settings: CLIPSettings | None = None,
                 tower_b: nn.Module | None = None, **overrides: Any) -> None:
        super().__init__(backbone, settings, tower_b, **overrides)
        self.loss = CLIPLoss(self.settings.temperature)

    def pair_loss(self, embeddings_a: Tensor, embeddings_b: Tensor) -> StepOutput:
        loss = self.loss(embeddings_a, embeddings_b)
        scale = float(clip_logit_scale(self.loss.log_scale.detach()))
        return StepOutput(loss=loss, metrics={"logit_scale": scale})

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """Clip the logit scale's parameter at log 100 after the optimiser step."""
        self.loss.clip_scale()
