r"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, Sec. 3 and Algorithm 1.

For two (N, D) batches Z, Z' of expander outputs (row b of each: one image):

.. math::

    s(Z, Z') = \frac{1}{N D} \sum_{b} \lVert z_b - z'_b \rVert_2^2
    \qquad \text{(invariance: mean squared error, as Algorithm 1's mse\_loss)}

    v(Z) = \frac{1}{D} \sum_{j=1}^{D}
           \max\bigl(0, \gamma - \sqrt{\mathrm{Var}(z^j) + \epsilon}\bigr)
    \qquad \text{(variance: hinge on the standard deviation of each dimension)}

    c(Z) = \frac{1}{D} \sum_{i \ne j} [C(Z)]_{ij}^2, \quad
    C(Z) = \frac{1}{N - 1} \sum_b (z_b - \bar z)(z_b - \bar z)^\top
    \qquad \text{(covariance: decorrelate the dimensions)}

    \ell(Z, Z') = \lambda\, s(Z, Z') + \mu\, [v(Z) + v(Z')] + \nu\, [c(Z) + c(Z')]

with :math:`\lambda = \mu = 25`, :math:`\nu = 1`, :math:`\gamma = 1`, :math:`\epsilon = 10^{-4}`
(the paper's defaults); Var is the unbiased variance (N - 1), as in Algorithm 1. The paper's
equation for s has no 1/D; Algorithm 1 (and the released code) average over D too, and the
weights 25/25/1 were tuned with that form, so it is used here. The released code also halves
:math:`\mu[v(Z) + v(Z')]`; the paper's loss and Algorithm 1 do not, and neither does this function.

**Global batch.** Every sum over samples (squared errors, means, variances, covariances) is
all-reduced across ranks (:func:`contrastlab.distributed.all_reduce_sum`, differentiable) and
divided by the global batch size, so the statistics are those of the global batch and every rank
holds the loss of the whole global batch; in one process this is the plain formula.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from contrastlab.distributed import all_reduce_sum, world_size
from contrastlab.errors import ConfigError


class VICRegTerms(NamedTuple):
    """The three unweighted terms: s(Z, Z'), v(Z) + v(Z'), c(Z) + c(Z')."""

    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance_and_covariance(z: Tensor, global_batch: int, gamma: float,
                             eps: float) -> tuple[Tensor, Tensor]:
    """v(Z) and c(Z) over the global batch."""
    dim = z.shape[1]
    mean = all_reduce_sum(z.sum(dim=0)) / global_batch
    centred = z - mean
    covariance = all_reduce_sum(centred.t() @ centred) / (global_batch - 1)
    variance = torch.diagonal(covariance)
    std = torch.sqrt(variance + eps)
    variance_term = torch.relu(gamma - std).mean()
    covariance_term = (covariance.pow(2).sum() - variance.pow(2).sum()) / dim
    return variance_term, covariance_term


def vicreg_terms(z1: Tensor, z2: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> VICRegTerms:
    """The unweighted invariance, variance and covariance terms (float32 at least, autocast
    off)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    global_batch = z1.shape[0] * world_size()  # every rank holds the same batch size
    if global_batch < 2:
        raise ValueError("VICReg needs at least 2 samples for the variance and covariance terms")
    with torch.autocast(z1.device.type, enabled=False):
        if z1.dtype in (torch.float16, torch.bfloat16):
            z1, z2 = z1.float(), z2.float()
        invariance = all_reduce_sum((z1 - z2).pow(2).sum()) / (global_batch * z1.shape[1])
        v1, c1 = _variance_and_covariance(z1, global_batch, gamma, eps)
        v2, c2 = _variance_and_covariance(z2, global_batch, gamma, eps)
    return VICRegTerms(invariance, v1 + v2, c1 + c2)


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg loss lambda s + mu (v(Z) + v(Z')) + nu (c(Z) + c(Z')) of two (N, D) batches."""
    _check_weights(invariance_weight, variance_weight, covariance_weight)
    terms = vicreg_terms(z1, z2, gamma, eps)
    return (invariance_weight * terms.invariance + variance_weight * terms.variance
            + covariance_weight * terms.covariance)


def _check_weights(*weights: float) -> None:
    names = ("invariance_weight", "variance_weight", "covariance_weight")
    for name, value in zip(names, weights, strict=True):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")


class VICRegLoss(nn.Module):
    """Module wrapper of :func:`vicreg_loss` with fixed weights."""

    def __init__(self, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0) -> None:
        super().__init__()
        _check_weights(invariance_weight, variance_weight, covariance_weight)
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg_loss(z1, z2, self.invariance_weight, self.variance_weight,
                           self.covariance_weight)

    def extra_repr(self) -> str:
        return (f"invariance_weight={self.invariance_weight}, "
                f"variance_weight={self.variance_weight}, "
                f"covariance_weight={self.covariance_weight}")
