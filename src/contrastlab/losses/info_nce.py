r"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, Algorithm 1.

For a batch of N images with two views each, the 2N projections are L2-normalised and compared by
cosine similarity :math:`s_{ij} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)`. For the
positive pair (i, j) (the two views of one image):

.. math::

    \ell(i, j) = -\log \frac{\exp(s_{ij}/\tau)}
                        {\sum_{k=1}^{2N} \mathbb{1}_{[k \ne i]} \exp(s_{ik}/\tau)}

and the loss is the mean over all 2N anchors,
:math:`\mathcal{L} = \frac{1}{2N} \sum_{k=1}^{N} [\ell(2k-1, 2k) + \ell(2k, 2k-1)]`.

Each anchor is compared with its positive and the 2N - 2 other views; its self-similarity is
excluded. The log-sum-exp is computed by ``torch.logsumexp`` (max-subtracted), so the loss stays
finite in float32 and bfloat16 even at temperature 0.01, where exp(1/0.01) would overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.losses.tiled import auto_chunk_size, check_chunk_size, tiled_nt_xent


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float = 0.5, chunk_size: int | None = None
) -> Tensor:
    """SimCLR's NT-Xent loss for two batches of projections (row i of ``z1`` and ``z2`` are a pair).

    Args:
        z1: (N, D) projections of the first views (need not be normalised).
        z2: (N, D) projections of the second views.
        temperature: tau > 0.
        chunk_size: anchors (and columns) per tile of the memory-efficient tiled form
            (:func:`contrastlab.losses.tiled.tiled_nt_xent`, same value and gradients, memory
            O(N D) instead of O(N^2)); None picks it automatically: the direct form while the
            2N x 2N float32 logit matrix fits in 256 MiB, tiles above.

    Returns:
        The scalar loss, the mean of l(i, j) over all 2N anchors. Half-precision inputs have their
        similarities promoted to float32 before the log-sum-exp; float64 stays float64.
    """
    _check_temperature(temperature)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"NT-Xent needs at least 2 pairs (a negative to contrast), got N={n}")
    check_chunk_size(chunk_size)
    if chunk_size is None:
        chunk_size = auto_chunk_size(2 * n, 2 * n, z1.device)
    if chunk_size is not None:  # local negatives, as the direct form below
        return tiled_nt_xent(z1, z2, temperature, chunk_size=chunk_size, gather=False)
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    similarity = z @ z.t()
    if similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()  # log-sum-exp in at least float32
    logits = similarity / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    # The positive of anchor i is i + N for the first half and i - N for the second half.
    positive_index = torch.cat(
        [torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)]
    )
    return F.cross_entropy(logits, positive_index)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent` with a fixed temperature."""

    def __init__(self, temperature: float = 0.5, chunk_size: int | None = None) -> None:
        super().__init__()
        _check_temperature(temperature)
        check_chunk_size(chunk_size)
        self.temperature = temperature
        self.chunk_size = chunk_size

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(z1, z2, self.temperature, self.chunk_size)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"
