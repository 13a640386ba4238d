r"""Regression of one view's prediction onto the other view's (stopped) target: BYOL and SimSiam.

**BYOL** (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. 2): the online prediction
:math:`p = q_\theta(z_\theta)` of one view regresses the target projection :math:`z'_\xi` of the
other view, both L2-normalised,

.. math::

    \mathcal{L}_{\theta,\xi} = \lVert \bar p - \bar z' \rVert_2^2
        = 2 - 2 \frac{\langle p, z' \rangle}{\lVert p\rVert_2 \, \lVert z'\rVert_2},

and the loss is symmetrised, :math:`\mathcal{L}^{BYOL} = \mathcal{L} + \tilde{\mathcal{L}}`,
:math:`\tilde{\mathcal{L}}` swapping the views; each term is averaged over the batch.

**SimSiam** (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. 1-4 and
Algorithm 1), which its authors describe as BYOL without the momentum encoder: with the negative
cosine similarity :math:`\mathcal{D}(p, z) = -\frac{p}{\lVert p\rVert_2} \cdot
\frac{z}{\lVert z\rVert_2}` and the stop-gradient on z,

.. math::

    \mathcal{L} = \tfrac12 \mathcal{D}(p_1, \mathrm{stopgrad}(z_2))
                + \tfrac12 \mathcal{D}(p_2, \mathrm{stopgrad}(z_1)),

averaged over the batch.

In both, the target is a constant: it is detached here, so no gradient reaches it (SimSiam
collapses without this stop-gradient, Sec. 4.1; ``stop_gradient=False`` of the SimSiam
functions removes it, for that ablation). Cosines are computed in at least float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(predictions: Tensor, targets: Tensor, stop_gradient: bool = True
          ) -> tuple[Tensor, Tensor]:
    if predictions.ndim != 2 or predictions.shape != targets.shape:
        raise ValueError(
            f"predictions and targets must both be (N, D) with the same shape, got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    if stop_gradient:
        targets = targets.detach()
    if predictions.dtype in (torch.float16, torch.bfloat16):
        predictions = predictions.float()
    return predictions, targets.to(predictions.dtype)


def normalized_mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """BYOL's ``mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))``; the targets
    are detached."""
    p, z = _pair(predictions, targets)
    return (2.0 - 2.0 * F.cosine_similarity(p, z, dim=1)).mean()


def byol_loss(p1: Tensor, p2: Tensor, target1: Tensor, target2: Tensor) -> Tensor:
    """Symmetrised BYOL loss: ``normalized_mse(p1, target2) + normalized_mse(p2, target1)``, where
    ``p_v`` is the online prediction of view v and ``target_v`` the target projection of view v."""
    return normalized_mse(p1, target2) + normalized_mse(p2, target1)


def negative_cosine(predictions: Tensor, targets: Tensor, stop_gradient: bool = True) -> Tensor:
    """SimSiam's ``D(p, stopgrad(z)) = -mean_i cos(p_i, z_i)``; ``stop_gradient=False`` lets the
    gradient reach z too (the ablation of the paper's Sec. 4.1)."""
    p, z = _pair(predictions, targets, stop_gradient)
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor,
                 stop_gradient: bool = True) -> Tensor:
    """Symmetrised SimSiam loss ``D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2``; in [-1, 1].
    With ``stop_gradient=False`` the targets are not detached (the paper's collapsing
    ablation)."""
    return (0.5 * negative_cosine(p1, z2, stop_gradient)
            + 0.5 * negative_cosine(p2, z1, stop_gradient))


class BYOLLoss(nn.Module):
    """Module wrapper of :func:`byol_loss`."""

    def forward(self, p1: Tensor, p2: Tensor, target1: Tensor, target2: Tensor) -> Tensor:
        return byol_loss(p1, p2, target1, target2)


class SimSiamLoss(nn.Module):
    """Module wrapper of :func:`simsiam_loss`."""

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return simsiam_loss(p1, p2, z1, z2)
