"""Supervised baseline: cross-entropy on the labels with the same backbone.

Not a self-supervised method: the reference the others are compared with (issue 3's
Fashion-MNIST table), trained by the same trainer, views, budget and evaluation::

    for minibatch {x_k, y_k}:
        v = augment(x)                       # ONE augmented view per image (num_views = 1)
        logits = W f(v) + b                  # backbone + linear classifier
        L = cross_entropy(logits, y)

One view per image (rather than both SimCLR views as extra samples) keeps the standard recipe
of supervised training with augmentation, and under a time budget it spends the budget on more
distinct images per second instead of a second view of each. ``encode`` is the backbone (what
kNN and the linear probe evaluate); ``project`` is the logits (the space the loss acts on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone
from contrastlab.settings import setting


@dataclass
class SupervisedSettings(MethodSettings):
    """The supervised baseline's settings."""

    num_classes: int = setting(0, "Classes of the linear classifier; 0: those of the training "
                               "data's labels.", source="the data", ge=0)


class Supervised(Method):
    """Backbone + linear classifier trained with cross-entropy.

    Settings: :class:`SupervisedSettings` (``num_classes``; the trainer fills in the training
    data's).
    """

    name = "supervised"
    Settings = SupervisedSettings
    num_views = 1
    needs_labels = True
    uses_labels = True

    def __init__(self, backbone: Backbone, settings: SupervisedSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        num_classes = self.settings.num_classes
        if num_classes < 2:
            raise ConfigError(
                f"the supervised baseline needs at least 2 classes, got num_classes={num_classes}"
            )
        self.num_classes = num_classes
        self.classifier = nn.Linear(backbone.output_dim, num_classes)

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 1:
            raise ValueError(f"the supervised baseline expects 1 view per image, got {len(views)}")
        if labels is None:
            raise ValueError("the supervised baseline needs labels for every training image")
        logits = self.classifier(self.backbone(views[0]))
        loss = F.cross_entropy(logits, labels)
        accuracy = float((logits.detach().argmax(dim=1) == labels).float().mean())
        return StepOutput(loss=loss, metrics={"train_accuracy": accuracy})

    def project(self, images: Tensor) -> Tensor:
        """Class logits (the space the cross-entropy acts on)."""
        return self.classifier(self.backbone(images))
