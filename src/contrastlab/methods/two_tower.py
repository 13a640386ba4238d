"""Two-tower methods for paired data (CLIP, SigLIP): two encoders, each with a linear projection
into a shared embedding space, trained so that paired inputs score higher than unpaired ones.

Tower A is the method's ``backbone`` (what ``encode`` and evaluation use). Tower B is any encoder
with an ``output_dim`` attribute: a text encoder for image-text data (``tower_b=``), or by default
a second, freshly initialised copy of the backbone's architecture (a deep copy whose parameters
are re-initialised, so the towers share nothing). On image data (``contrastlab train --method
clip``) the pairs are two augmented views of one image: view 1 goes to tower A, view 2 to tower
B. On image-caption pairs (``contrastlab train-pairs``) tower B is the text tower
(:mod:`contrastlab.methods.image_text`) and :meth:`TwoTowerMethod.pair_step` takes the images
and their captions' tokens.

Subclasses set ``name`` and implement :meth:`TwoTowerMethod.pair_loss`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone


def reinitialize(module: nn.Module) -> None:
    """Re-initialise every parameter and batch-norm statistic of ``module`` in place.

    A module that defines ``reset_parameters`` (PyTorch layers; the ViT with its own scheme) or
    ``_reset_parameters`` (``nn.MultiheadAttention``) is reset by it and owns its children;
    other modules are searched recursively. Layers get PyTorch's default initialisation, which
    may differ from their architecture's own (e.g. torchvision's Kaiming-normal ResNet
    convolutions).
    """
    for attribute in ("reset_parameters", "_reset_parameters"):
        reset = getattr(module, attribute, None)
        if callable(reset):
            reset()
            return
    for child in module.children():
        reinitialize(child)


def fresh_copy(backbone: nn.Module) -> nn.Module:
    """A deep copy of ``backbone`` with re-initialised parameters (same architecture)."""
    tower = copy.deepcopy(backbone)
    reinitialize(tower)
    return tower


class TwoTowerMethod(Method):
    """Tower A = backbone + linear projection, tower B = ``tower_b`` + linear projection.

    Args:
        backbone: tower A's encoder (used for evaluation).
        settings: the method's settings, with ``projection_dim`` (width of the shared space).
        tower_b: tower B's encoder (with ``output_dim``); default: a fresh copy of ``backbone``.
    """

    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: MethodSettings | None = None,
                 tower_b: nn.Module | None = None, **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        projection_dim = self.settings.projection_dim  # type: ignore[attr-defined]
        self.tower_b = fresh_copy(backbone) if tower_b is None else tower_b
        tower_b_dim: Any = getattr(self.tower_b, "output_dim", None)
        if not isinstance(tower_b_dim, int):
            raise ValueError("tower_b must have an integer output_dim attribute")
        # bias-free linear projections as in CLIP (Radford et al. 2021, Figure 3: W_i, W_t)
        self.projection_a = nn.Linear(backbone.output_dim, projection_dim, bias=False)
        self.projection_b = nn.Linear(tower_b_dim, projection_dim, bias=False)

    def embed_a(self, inputs: Tensor) -> Tensor:
        """Tower A's embedding (not normalised; the losses normalise)."""
        return self.projection_a(self.backbone(inputs))

    def embed_b(self, inputs: Tensor) -> Tensor:
        """Tower B's embedding (not normalised; the losses normalise)."""
        return self.projection_b(self.tower_b(inputs))

    def pair_loss(self, embeddings_a: Tensor, embeddings_b: Tensor) -> StepOutput:
        """The loss over the N x N pairs; row i of both is a positive pair."""
        raise NotImplementedError

    def pair_step(self, inputs_a: Any, inputs_b: Any) -> StepOutput:
        """The training step on N pairs given as the two towers' inputs (images and token
        batches for image-text data): :meth:`pair_loss` of their embeddings."""
        return self.pair_loss(self.embed_a(inputs_a), self.embed_b(inputs_b))

    def embed_views(self, views: list[Tensor]) -> Tensor:
        """Tower A's embedding of view 1 and tower B's of view 2, as ``(n, 2, D)`` rows."""
        if len(views) != 2:
            raise ValueError(
                f"{self.name} expects exactly 2 views per image (one per tower), got {len(views)}"
            )
        return torch.stack([self.embed_a(views[0]), self.embed_b(views[1])], dim=1)

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """:meth:`pair_loss` of the two towers' embeddings."""
        return self.pair_loss(embeddings[:, 0], embeddings[:, 1])

    def project(self, images: Tensor) -> Tensor:
        """Tower A's embedding in the shared space."""
        return self.embed_a(images)
