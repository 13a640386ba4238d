"""RotNet: learn features by predicting which of four rotations was applied to an image.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018, Sec. 2::

    for minibatch {x_i}, i = 1..N:
        X = [rot(x, 0), rot(x, 90), rot(x, 180), rot(x, 270)]   # all four rotations, 4N images
        y = [0]*N + [1]*N + [2]*N + [3]*N
        L = cross_entropy(F(f(X)), y)                           # f: backbone, F: 4-way classifier
        update f and F to minimise L

Recognising the rotation requires knowing the canonical orientation of the objects in the image
(where the head, the top of a digit... is), which the paper argues forces semantic features.
The paper feeds all four rotations of every image in the same batch (better than one random
rotation per image), as done here. There are no cross-sample terms, so nothing is gathered across
processes.

The paper's classifier is the top convolutional blocks of its network-in-network; with backbones
that end in global pooling the classifier here is a small MLP (Linear-BN-ReLU-Linear, hidden width
``projection_hidden_dim``, default 256) or linear (``classifier_layers=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from contrastlab.losses.rotation import NUM_ROTATIONS, rotate_four_ways, rotation_prediction_loss
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class RotNetSettings(MethodSettings):
    """RotNet's hyper-parameters."""

    projection_hidden_dim: int = setting(256, "Hidden width of the rotation classifier.",
                                         source="here", ge=1)
    classifier_layers: int = setting(2, "Layers of the rotation classifier (1: linear).",
                                     source="here", ge=1)


class RotNet(Method):
    """Rotation prediction (0/90/180/270 degrees) with a classifier on backbone features.

    Settings: :class:`RotNetSettings` (the classifier's width and layers).
    """

    name = "rotnet"
    Settings = RotNetSettings
    num_views = 1

    def __init__(self, backbone: Backbone, settings: RotNetSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.classifier = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                         NUM_ROTATIONS, num_layers=s.classifier_layers,
                                         last_batch_norm=False)

    def rotation_logits(self, images: Tensor) -> Tensor:
        """(M, C, H, W) -> (M, 4) rotation logits F(f(x))."""
        return self.classifier(self.backbone(images))

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 1:
            raise ValueError(f"RotNet expects exactly 1 view per image, got {len(views)}")
        rotated, rotation_labels = rotate_four_ways(views[0])
        logits = self.rotation_logits(rotated)
        loss = rotation_prediction_loss(logits, rotation_labels)
        accuracy = (logits.detach().argmax(dim=1) == rotation_labels).float().mean()
        return StepOutput(loss=loss, metrics={"rotation_accuracy": float(accuracy)})
