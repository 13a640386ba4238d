r"""InfoNCE with one positive per anchor, and SimCLR's NT-Xent.

**InfoNCE** (van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive
Coding", 2018, eq. 4): each anchor :math:`a_i` is classified among the candidate columns
:math:`c_j`, its positive being column :math:`\mathrm{pos}(i)`:

.. math::

    \ell_i = \log \sum_{j \ne \mathrm{self}(i)} e^{\sigma a_i^\top c_j}
             - \sigma a_i^\top c_{\mathrm{pos}(i)} .

:func:`info_nce_loss` is this form for given embeddings; CLIP, MoCo v3, NNCLR and the N-pair
loss are built on it.

**NT-Xent** (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020, Algorithm 1). For a batch of N images with two views each,
the 2N projections are L2-normalised and compared by cosine similarity
:math:`s_{ij} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)`. For the positive pair
(i, j) (the two views of one image):

.. math::

    \ell(i, j) = -\log \frac{\exp(s_{ij}/\tau)}
                        {\sum_{k=1}^{2N} \mathbb{1}_{[k \ne i]} \exp(s_{ik}/\tau)}

and the loss is the mean over all 2N anchors,
:math:`\mathcal{L} = \frac{1}{2N} \sum_{k=1}^{N} [\ell(2k-1, 2k) + \ell(2k, 2k-1)]`.

**Direct or tiled.** The log-sum-exp is
:func:`contrastlab.losses.tiled.logsumexp_over_columns`: one matrix of logits while it fits in
256 MiB, tiles of ``chunk_size`` above (or whenever ``chunk_size`` is given), the same values
and gradients, finite in float32 and bfloat16 even at temperature 0.01.

**Distributed** (``gather=True``, the default of every loss here): under ``torch.distributed``
with several processes, each process's views are its rows and every process's views, gathered
with gradient, are the columns; :func:`nt_xent_rows` is that form for given columns. A rank's
loss is the mean over its own anchors, so with DDP's gradient averaging training optimises the
mean over the global batch exactly (docs/architecture.md, "The distributed case"). In one
process ``gather`` changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns
from contrastlab.losses.checks import (
    check_pair,
    check_row_offset,
    check_same_width,
    check_temperature,
)
from contrastlab.losses.tiled import (
    check_chunk_size,
    compute_dtype,
    default_chunk_size,
    logsumexp_over_columns,
)


def info_nce_loss(
    anchors: Tensor,
    candidates: Tensor,
    positive_index: Tensor,
    scale: float | Tensor,
    *,
    self_offset: int | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Cross-entropy of each anchor against its positive column, averaged over the anchors:
    :math:`\ell_i = \mathrm{LSE}_{j \ne \mathrm{self}(i)} (\sigma a_i^\top c_j)
    - \sigma a_i^\top c_{\mathrm{pos}(i)}`.

    The embeddings are used as given (normalise them first for cosine similarities). Equal to
    ``F.cross_entropy(scale * anchors @ candidates.T (self masked), positive_index)``.

    Args:
        anchors: (M, D).
        candidates: (K, D).
        positive_index: (M,) column index of each anchor's positive.
        scale: logit scale sigma (1 / temperature), a float or a scalar tensor (may be learned).
        self_offset: if given, row ``i`` skips column ``self_offset + i`` (the anchors are
            ``candidates[self_offset : self_offset + M]``).
        chunk_size: rows and columns per tile; None: automatic (see the module docstring).
    """
    check_same_width(anchors=anchors, candidates=candidates)
    if positive_index.shape != (anchors.shape[0],):
        raise ValueError(
            f"positive_index must have shape ({anchors.shape[0]},), got "
            f"{tuple(positive_index.shape)}"
        )
    dtype = compute_dtype(anchors, candidates)
    anchors, candidates = anchors.to(dtype), candidates.to(dtype)
    scaled = anchors * scale
    lse = logsumexp_over_columns(scaled, candidates, self_offset=self_offset,
                                 chunk_size=chunk_size)
    positive_logit = (scaled * candidates[positive_index]).sum(dim=1)
    return (lse - positive_logit).mean()


def nt_xent_rows(
    views: Tensor,
    columns: Tensor,
    row_offset: int,
    temperature: float = 0.5,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""NT-Xent of this process's 2n views against K >= 2n columns (the distributed form).

    Args:
        views: (2n, D) local projections, first views then second views (rows ``i`` and
            ``i + n`` are the two views of image ``i``); L2-normalised here.
        columns: (K, D) every view that is contrasted, in blocks of 2n laid out like ``views``
            (what gathering ``views`` from all ranks gives); ``columns[row_offset : row_offset +
            2n]`` must be ``views``. L2-normalised here.
        row_offset: position of the local views in ``columns`` (``rank * 2n``).
        temperature: tau > 0.
        chunk_size: rows and columns per tile; None: automatic.

    Returns:
        The mean over the local 2n anchors (so the mean over ranks is the loss of the whole
        batch).
    """
    check_temperature(temperature)
    check_same_width(views=views, columns=columns)
    rows = views.shape[0]
    if rows % 2 or rows == 0:
        raise ValueError(f"views must hold 2n rows (first views, then second views), got {rows}")
    if columns.shape[0] < 4:
        raise ValueError(f"NT-Xent needs at least 2 pairs (a negative to contrast), got "
                         f"N={columns.shape[0] // 2}")
    check_row_offset(row_offset, rows, columns.shape[0])
    dtype = compute_dtype(views, columns)
    anchors = F.normalize(views.to(dtype), dim=1)
    candidates = anchors if columns is views else F.normalize(columns.to(dtype), dim=1)
    local = torch.arange(rows, device=views.device)
    positive_index = row_offset + (local + rows // 2) % rows
    return info_nce_loss(anchors, candidates, positive_index, 1.0 / temperature,
                    self_offset=row_offset, chunk_size=chunk_size)


def _nt_xent(z1: Tensor, z2: Tensor, temperature: float, chunk_size: int | None,
             gather: bool) -> Tensor:
    check_pair(z1, z2)
    views = torch.cat([z1, z2], dim=0)
    columns, row_offset = gather_columns(views, gather)
    return nt_xent_rows(views, columns, row_offset, temperature, chunk_size=chunk_size)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    """SimCLR's NT-Xent loss for two batches of projections (row i of ``z1`` and ``z2`` are a pair).

    Args:
        z1: (N, D) projections of the first views (need not be normalised).
        z2: (N, D) projections of the second views.
        temperature: tau > 0.
        chunk_size: None picks the form automatically (direct while the logit matrix fits in
            256 MiB, tiles above); an int always tiles with it (:func:`tiled_nt_xent`, same value
            and gradients, memory O(N D) instead of O(N^2)).
        gather: under ``torch.distributed`` with several processes, contrast the local anchors
            with every process's views (gathered with gradient); nothing changes in one process.

    Returns:
        The scalar loss, the mean of l(i, j) over the (local) 2N anchors, in float32 (float64 for
        float64 inputs).
    """
    check_temperature(temperature)
    check_chunk_size(chunk_size)
    if chunk_size is not None:
        return tiled_nt_xent(z1, z2, temperature, chunk_size=chunk_size, gather=gather)
    return _nt_xent(z1, z2, temperature, None, gather)


def tiled_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, *,
                  chunk_size: int | None = None, gather: bool = True) -> Tensor:
    """:func:`nt_xent` in tiles whatever the batch size (what ``nt_xent`` calls when given a
    ``chunk_size``): memory O(N D + chunk_size^2); ``chunk_size`` None is
    :func:`contrastlab.losses.tiled.default_chunk_size`."""
    check_chunk_size(chunk_size)
    return _nt_xent(z1, z2, temperature, chunk_size or default_chunk_size(z1.device), gather)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent` with a fixed temperature (and optional tile size)."""

    def __init__(self, temperature: float = 0.5, chunk_size: int | None = None) -> None:
        super().__init__()
        check_temperature(temperature)
        check_chunk_size(chunk_size)
        self.temperature = temperature
        self.chunk_size = chunk_size

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(z1, z2, self.temperature, chunk_size=self.chunk_size)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"


__all__ = ["NTXentLoss", "info_nce_loss", "nt_xent", "nt_xent_rows", "tiled_nt_xent"]
