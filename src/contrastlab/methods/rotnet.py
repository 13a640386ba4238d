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

from torch import Tensor

from contrastlab.losses.rotation import NUM_ROTATIONS, rotate_four_ways, rotation_prediction_loss
from contrastlab.methods.base import Method, StepOutput
from contrastlab.models import Backbone, ProjectionHead


class RotNet(Method):
    """Rotation prediction (0/90/180/270 degrees) with a classifier on backbone features.

    Args:
        backbone: encoder f.
        projection_hidden_dim: hidden width of the rotation classifier F.
        classifier_layers: 2 for an MLP classifier, 1 for a linear one.
    """

    name = "rotnet"
    num_views = 1

    def __init__(self, backbone: Backbone, projection_hidden_dim: int = 256,
                 classifier_layers: int = 2) -> None:
        super().__init__(backbone)
        self.classifier = ProjectionHead(backbone.output_dim, projection_hidden_dim,
                                         NUM_ROTATIONS, num_layers=classifier_layers,
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
