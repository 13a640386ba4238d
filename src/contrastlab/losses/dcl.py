r"""Decoupled contrastive loss (DCL) and its weighted form (DCLW).

Yeh, Hong, Hsu, Liu, Chen & LeCun, "Decoupled Contrastive Learning", ECCV 2022: the DCL loss
and its weighted form DCLW (Sec. 3).

NT-Xent's gradient carries a *negative-positive coupling* factor: the positive pair also sits in
the denominator, which shrinks the gradient when the positive is easy or the negatives are few
(small batches). DCL removes the positive from the denominator. With the 2N views of N images
L2-normalised and :math:`j` the other view of anchor :math:`i`'s image:

.. math::

    \ell^{DCL}_i = -\frac{z_i \cdot z_j}{\tau}
                   + \log \sum_{k \ne i,\, k \ne j} \exp(z_i \cdot z_k / \tau),
    \qquad \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

DCLW weights the positive term by a negative von Mises-Fisher weighting function of the positive
pair, normalised over the batch of positive pairs:

.. math::

    w(z^{(1)}_n, z^{(2)}_n) = 2 - \frac{\exp(z^{(1)}_n \cdot z^{(2)}_n / \sigma)}
        {\frac{1}{N} \sum_{m=1}^{N} \exp(z^{(1)}_m \cdot z^{(2)}_m / \sigma)}
    = 2 - N\, \mathrm{softmax}_n\bigl(z^{(1)} \cdot z^{(2)} / \sigma\bigr),

so pairs that already agree more than the batch average get less weight (the weights average
to 1); the same weight multiplies the positive term of both views of image n. The paper uses
:math:`\sigma = 0.5` and :math:`\tau = 0.1`. The weight is a function of the embeddings and is
differentiated through (the paper defines no stop-gradient).

The paper sums the loss over both view directions; here it is the mean over the 2N anchors (the
same normalisation as :func:`contrastlab.losses.nt_xent`, half the paper's sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError


def _check(temperature: float, weight_sigma: float | None) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if weight_sigma is not None and not weight_sigma > 0:
        raise ConfigError(f"weight_sigma must be > 0, got {weight_sigma}")


def dclw_weights(z1: Tensor, z2: Tensor, weight_sigma: float = 0.5) -> Tensor:
    """DCLW's weight of each positive pair, 2 - N softmax_n(cos(z1_n, z2_n) / sigma) (N,)."""
    cosine = (F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(dim=1)
    if cosine.dtype in (torch.float16, torch.bfloat16):
        cosine = cosine.float()
    return 2 - z1.shape[0] * torch.softmax(cosine / weight_sigma, dim=0)


def dcl_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1,
             weight_sigma: float | None = None) -> Tensor:
    """DCL (``weight_sigma=None``) or DCLW loss of two (N, D) batches (row i: image i).

    Args:
        z1: (N, D) embeddings of the first views (need not be normalised).
        z2: (N, D) embeddings of the second views.
        temperature: tau > 0.
        weight_sigma: sigma of DCLW's weighting function; None for unweighted DCL.

    Returns:
        The mean over the 2N anchors of -w s_ij / tau + log sum_{k != i, j} exp(s_ik / tau).
    """
    _check(temperature, weight_sigma)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"DCL needs at least 2 images (a negative to contrast), got N={n}")
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    similarity = z @ z.t()
    if similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()
    logits = similarity / temperature
    anchors = torch.arange(2 * n, device=z.device)
    positive_index = (anchors + n) % (2 * n)
    positive_logit = logits[anchors, positive_index]
    excluded = torch.zeros_like(logits, dtype=torch.bool)
    excluded[anchors, anchors] = True
    excluded[anchors, positive_index] = True
    negative_term = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    if weight_sigma is not None:
        weight = dclw_weights(z1, z2, weight_sigma)
        positive_logit = positive_logit * torch.cat([weight, weight])
    return (negative_term - positive_logit).mean()


def dclw_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1,
              weight_sigma: float = 0.5) -> Tensor:
    """DCLW: :func:`dcl_loss` with the positive term weighted by :func:`dclw_weights`."""
    return dcl_loss(z1, z2, temperature, weight_sigma)


class DCLLoss(nn.Module):
    """Module wrapper of :func:`dcl_loss` (``weight_sigma`` set: DCLW)."""

    def __init__(self, temperature: float = 0.1, weight_sigma: float | None = None) -> None:
        super().__init__()
        _check(temperature, weight_sigma)
        self.temperature = temperature
        self.weight_sigma = weight_sigma

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return dcl_loss(z1, z2, self.temperature, self.weight_sigma)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weight_sigma={self.weight_sigma}"
