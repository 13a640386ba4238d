r"""Barlow Twins: make the cross-correlation of two views' embeddings the identity matrix.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, eq. (1)-(2) and Algorithm 1.

Each of the D embedding dimensions is standardised over the batch (mean 0, standard deviation 1;
the paper's code does this with a ``BatchNorm1d`` without affine parameters, so the variance is
the biased one and :math:`\epsilon = 10^{-5}` is added to it), then

.. math::

    \mathcal{C}_{ij} = \frac{1}{N} \sum_{b=1}^{N} \hat z^A_{b,i} \, \hat z^B_{b,j},
    \qquad
    \mathcal{L}_{BT} = \sum_i (1 - \mathcal{C}_{ii})^2
                     + \lambda \sum_i \sum_{j \ne i} \mathcal{C}_{ij}^2 .

The first (invariance) term makes each dimension agree across the two views; the second
(redundancy reduction) term decorrelates different dimensions.

**Global batch.** Means, variances and :math:`\mathcal{C}` are sums over samples divided by the
global batch size, so each sum is all-reduced across ranks
(:func:`contrastlab.distributed.all_reduce_sum`, differentiable); every rank then holds the loss
of the whole global batch, and in one process this is the plain formula above.

**lambda scaled to the projector width.** The paper uses :math:`\lambda = 5 \cdot 10^{-3}` with
its D = 8192 projector and batches of N = 2048. The off-diagonal sum has D(D - 1) terms against D
diagonal ones, and even for independent dimensions each sample :math:`\mathcal{C}_{ij}^2` is
about 1/N, so that term carries about :math:`\lambda D^2 / N` of sampling noise alone.
The default here is :math:`\lambda = 1/D` (Tsai, Bai, Morency & Salakhutdinov, "A Note on
Connecting Barlow Twins with Negative-Sample-Free Contrastive Learning", 2021): complete
dimensional collapse (all :math:`\mathcal{C}_{ij} = 1`) then costs about D, as much as losing
every diagonal entry, while the noise stays at D/N. The other rule, keeping the paper's value at
its width (:math:`5 \cdot 10^{-3} \cdot 8192 / D`), gives 1.28 at D = 32, where the noise
swamps the diagonal term at small batches (measurements in docs/methods.md, barlow-twins). An
explicit ``off_diagonal_weight`` is used as given.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastlab.distributed import all_reduce_sum, world_size
from contrastlab.errors import ConfigError

#: Added to the variance before the square root, as BatchNorm1d does in the paper's code.
STANDARDISE_EPS = 1e-5


def scaled_off_diagonal_weight(dim: int) -> float:
    """The default lambda for a projector of width ``dim``: 1 / dim."""
    return 1.0 / dim


def _standardise(z: Tensor, global_batch: int) -> Tensor:
    """(z - mean) / sqrt(var + eps) per dimension, mean and biased variance over the global
    batch."""
    mean = all_reduce_sum(z.sum(dim=0)) / global_batch
    centred = z - mean
    variance = all_reduce_sum(centred.pow(2).sum(dim=0)) / global_batch
    return centred / torch.sqrt(variance + STANDARDISE_EPS)


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """The D x D cross-correlation matrix C of two (N, D) batches, standardised and summed over
    the global batch (float32 at least, autocast off)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    with torch.autocast(z1.device.type, enabled=False):
        if z1.dtype in (torch.float16, torch.bfloat16):
            z1, z2 = z1.float(), z2.float()
        global_batch = z1.shape[0] * world_size()  # every rank holds the same batch size
        if global_batch < 2:
            raise ValueError("Barlow Twins needs at least 2 samples to standardise over the batch")
        return all_reduce_sum(_standardise(z1, global_batch).t() @ _standardise(z2, global_batch)
                              ) / global_batch


def barlow_twins_loss(z1: Tensor, z2: Tensor, off_diagonal_weight: float | None = None) -> Tensor:
    """Barlow Twins loss of two (N, D) batches of projector outputs (row i of each: one image).

    Args:
        z1: embeddings of the first views.
        z2: embeddings of the second views.
        off_diagonal_weight: lambda; None uses :func:`scaled_off_diagonal_weight` of D.
    """
    weight = _check_weight(off_diagonal_weight, z1.shape[-1])
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + weight * off_diagonal


def _check_weight(weight: float | None, dim: int) -> float:
    if weight is None:
        return scaled_off_diagonal_weight(dim)
    if weight < 0:
        raise ConfigError(f"off_diagonal_weight must be >= 0, got {weight}")
    return weight


class BarlowTwinsLoss(nn.Module):
    """Module wrapper of :func:`barlow_twins_loss` with a fixed lambda (None: width-scaled)."""

    def __init__(self, off_diagonal_weight: float | None = None) -> None:
        super().__init__()
        _check_weight(off_diagonal_weight, 1)
        self.off_diagonal_weight = off_diagonal_weight

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.off_diagonal_weight)

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight}"
