r"""Rotation prediction, the RotNet pretext task.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018, Sec. 2.

Every image :math:`X_i` is rotated by :math:`y \cdot 90` degrees for each of the K = 4 classes
:math:`y \in \{0, 1, 2, 3\}` (0, 90, 180, 270 degrees, counter-clockwise), and a classifier F
predicts the rotation. The loss is the cross-entropy averaged over the N images and their four
rotations (the paper's Eq. 2-3, with all four rotations of an image in the same batch, which the
paper found better than one random rotation per image):

.. math::

    \mathcal{L} = -\frac{1}{4N} \sum_{i=1}^{N} \sum_{y=0}^{3}
                  \log \operatorname{softmax}(F(\operatorname{rot}(X_i, 90 y)))_y
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_ROTATIONS = 4


def rotate_four_ways(images: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) square images -> (4N, C, H, W) rotations and their (4N,) labels.

    Rows ``y * N .. (y + 1) * N - 1`` hold every image rotated counter-clockwise by ``90 y``
    degrees (``torch.rot90`` with k = y over the (H, W) dimensions), labelled ``y``.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square (N, C, H, W) images, got {tuple(images.shape)}")
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


def rotation_prediction_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the (4N, 4) rotation logits against the rotation labels."""
    if logits.ndim != 2 or logits.shape[1] != NUM_ROTATIONS:
        raise ValueError(f"rotation logits must be (M, 4), got {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, labels)


class RotationPredictionLoss(nn.Module):
    """Module wrapper of :func:`rotation_prediction_loss`."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return rotation_prediction_loss(logits, labels)


__all__ = ["NUM_ROTATIONS", "RotationPredictionLoss", "rotate_four_ways",
           "rotation_prediction_loss"]
