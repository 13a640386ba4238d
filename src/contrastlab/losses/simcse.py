r"""SimCSE's contrastive loss: in-batch InfoNCE over cosine similarities, optionally with one hard
negative per anchor.

Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021.
For a batch of N anchors :math:`h_i`, their positives :math:`h_i^+` and (supervised SimCSE,
eq. 5) their hard negatives :math:`h_i^-`, with :math:`\mathrm{sim}(u, v) = u^\top v /
(\lVert u\rVert \lVert v\rVert)`:

.. math::

    \ell_i = -\log \frac{e^{\mathrm{sim}(h_i, h_i^+)/\tau}}
        {\sum_{j=1}^{N} \left(e^{\mathrm{sim}(h_i, h_j^+)/\tau}
                              + e^{\mathrm{sim}(h_i, h_j^-)/\tau}\right)}

and the loss is the mean over the anchors. Without hard negatives (unsupervised SimCSE, eq. 4,
where :math:`h_i^+` is the same sentence under another dropout mask, and supervised SimCSE
without negatives) the second term of the sum is absent. Unlike NT-Xent the loss is one-sided:
the anchors are rows, the positives (and negatives) the columns; an anchor is not contrasted with
the other anchors.

The log-sum-exp is :func:`contrastlab.losses.tiled.logsumexp_over_columns` (direct or tiled,
``chunk_size``). With ``gather=True`` under several processes the columns are every rank's
positives and negatives (gathered with gradient) and the rows the local anchors, as in the
paper's multi-GPU training with global in-batch negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.distributed import gather_columns
from contrastlab.losses.checks import check_pair, check_row_offset, check_temperature
from contrastlab.losses.info_nce import info_nce_loss
from contrastlab.losses.tiled import check_chunk_size, compute_dtype


def simcse_loss_rows(anchors: Tensor, positives: Tensor, row_offset: int, temperature: float,
                     negatives: Tensor | None = None, *, chunk_size: int | None = None
                     ) -> Tensor:
    """The loss of the local ``anchors`` (n, D) against given columns: ``positives`` (K, D),
    every rank's positives (``positives[row_offset + i]`` is anchor i's), and optionally
    ``negatives`` (K, D) laid out the same way. Inputs are L2-normalised here."""
    check_temperature(temperature)
    check_chunk_size(chunk_size)
    if anchors.ndim != 2 or positives.ndim != 2 or anchors.shape[1] != positives.shape[1]:
        raise ValueError(f"anchors and positives must be (n, D) and (K, D), got "
                         f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    check_row_offset(row_offset, anchors.shape[0], positives.shape[0])
    if negatives is not None and negatives.shape != positives.shape:
        raise ValueError(f"negatives must be shaped like the positives {tuple(positives.shape)}, "
                         f"got {tuple(negatives.shape)}")
    dtype = compute_dtype(anchors, positives)
    columns = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    rows = F.normalize(anchors.to(dtype), dim=1)
    columns = F.normalize(columns.to(dtype), dim=1)
    positive_index = row_offset + torch.arange(anchors.shape[0], device=anchors.device)
    return info_nce_loss(rows, columns, positive_index, 1.0 / temperature,
                         chunk_size=chunk_size)


def simcse_loss(anchors: Tensor, positives: Tensor, temperature: float = 0.05,
                negatives: Tensor | None = None, *, chunk_size: int | None = None,
                gather: bool = True) -> Tensor:
    """SimCSE's loss (see the module docstring) of N anchors, their positives and optionally
    their hard negatives, each (N, D); tau = 0.05 is the paper's (its Table D.1)."""
    check_pair(anchors, positives, "anchors and positives")
    if anchors.shape[0] < 2:
        raise ValueError("SimCSE needs at least 2 sentences per batch (the others are the "
                         f"negatives), got {anchors.shape[0]}")
    if negatives is not None:
        check_pair(anchors, negatives, "anchors and negatives")
    columns, row_offset = gather_columns(positives, gather)
    negative_columns = None if negatives is None else gather_columns(negatives, gather)[0]
    return simcse_loss_rows(anchors, columns, row_offset, temperature, negative_columns,
                            chunk_size=chunk_size)


__all__ = ["simcse_loss", "simcse_loss_rows"]
