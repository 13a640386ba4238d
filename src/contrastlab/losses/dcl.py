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

Distributed (``gather``, the default): each process's 2n views are its anchors and every
process's views, gathered with gradient, the columns; DCLW's weights are normalised over the
global batch's pairs. A rank's loss is the mean over its anchors, so DDP's gradient averaging
gives the global batch's loss exactly. The logits are one matrix (no tiled form: the
denominator leaves out two columns per anchor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns
from contrastlab.losses.checks import check_pair, check_temperature
from contrastlab.losses.tiled import compute_dtype


def _check(temperature: float, weight_sigma: float | None) -> None:
    check_temperature(temperature)
    if weight_sigma is not None:
        check_temperature(weight_sigma, "weight_sigma")


def dclw_weights(z1: Tensor, z2: Tensor, weight_sigma: float = 0.5) -> Tensor:
    """DCLW's weight of each positive pair, 2 - N softmax_n(cos(z1_n, z2_n) / sigma) (N,)."""
    cosine = (F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(dim=1)
    cosine = cosine.to(compute_dtype(cosine))
    return 2 - z1.shape[0] * torch.softmax(cosine / weight_sigma, dim=0)


def dcl_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1,
             weight_sigma: float | None = None, *, gather: bool = True) -> Tensor:
    """DCL (``weight_sigma=None``) or DCLW loss of two (N, D) batches (row i: image i).

    Args:
        z1: (N, D) embeddings of the first views (need not be normalised).
        z2: (N, D) embeddings of the second views.
        temperature: tau > 0.
        weight_sigma: sigma of DCLW's weighting function; None for unweighted DCL.
        gather: under ``torch.distributed`` with several processes, contrast the local anchors
            with every process's views; nothing changes in one process.

    Returns:
        The mean over the (local) 2N anchors of -w s_ij / tau + log sum_{k != i, j}
        exp(s_ik / tau).
    """
    _check(temperature, weight_sigma)
    check_pair(z1, z2)
    n = z1.shape[0]
    views = torch.cat([z1, z2], dim=0)
    columns, row_offset = gather_columns(views, gather)
    if columns.shape[0] < 4:
        raise ValueError(f"DCL needs at least 2 images (a negative to contrast), got "
                         f"N={columns.shape[0] // 2}")
    dtype = compute_dtype(views, columns)
    anchors = F.normalize(views.to(dtype), dim=1)
    candidates = anchors if columns is views else F.normalize(columns.to(dtype), dim=1)
    logits = anchors @ candidates.t() / temperature
    local = torch.arange(2 * n, device=logits.device)
    positive_index = row_offset + (local + n) % (2 * n)
    positive_logit = logits[local, positive_index]
    excluded = (torch.cat([local, local]), torch.cat([row_offset + local, positive_index]))
    negative_term = torch.logsumexp(
        logits.index_put(excluded, torch.tensor(-math.inf, dtype=dtype, device=logits.device)),
        dim=1)
    if weight_sigma is not None:  # every process's pairs: blocks of (first views, second views)
        pairs = candidates.unflatten(0, (-1, 2, n))
        weight = dclw_weights(pairs[:, 0].flatten(0, 1), pairs[:, 1].flatten(0, 1), weight_sigma)
        local_weight = weight[row_offset // 2 : row_offset // 2 + n]
        positive_logit = positive_logit * torch.cat([local_weight, local_weight])
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
