r"""Memory-efficient exact InfoNCE: a tiled log-sum-exp with a recomputing backward.

Every InfoNCE-style loss here has, for anchor :math:`i` with embedding :math:`a_i` and candidate
columns :math:`c_j`, logits :math:`s_{ij} = \sigma\, a_i^\top c_j` (scale :math:`\sigma = 1/\tau`)
and the per-anchor loss

.. math::

    \ell_i = \underbrace{\log \sum_{j \ne \mathrm{self}(i)} e^{s_{ij}}}_{\mathrm{LSE}_i}
             - \frac{1}{|P(i)|} \sum_{p \in P(i)} s_{ip},

with :math:`P(i)` the positives of anchor :math:`i` (one for SimCLR, MoCo and CLIP; all views with
the same label for SupCon). The second term is linear in the embeddings and costs O(N D) through
ordinary autograd (class sums for SupCon). The first term is what would need the N x N logit
matrix; :class:`TiledLogSumExp` computes it tile by tile:

* forward: for each block of ``chunk_size`` anchors and each block of ``chunk_size`` columns, one
  matmul gives the logit tile; each row keeps a running maximum :math:`m_i` and a running sum
  :math:`s_i = \sum_j e^{s_{ij} - m_i}` (rescaled when :math:`m_i` grows), so
  :math:`\mathrm{LSE}_i = m_i + \log s_i` is exact and never overflows, in any dtype and at
  any temperature. Only the inputs and the M values :math:`\mathrm{LSE}_i` are saved.
* backward: with :math:`g_i = \partial L / \partial \mathrm{LSE}_i` and the recomputed softmax
  tile :math:`p_{ij} = e^{s_{ij} - \mathrm{LSE}_i}`,
  :math:`\partial L/\partial a_i = \sum_j g_i p_{ij} c_j` and
  :math:`\partial L/\partial c_j = \sum_i g_i p_{ij} a_i` are accumulated tile by tile.
  Together with the positive term's gradient this is the usual
  (softmax - positive indicator) rule of cross-entropy.

Memory: O((M + K) D + chunk_size^2) instead of O(M K) for M anchors and K columns. Time: the
forward matmul is done twice (forward and recomputation), so about 4/3 of the direct form's
matmul work, which the tiled form wins back by staying in cache (no M x K temporaries).

Covered forms (all exact, tested against the direct formulas):

* :func:`tiled_nt_xent` - SimCLR's NT-Xent over 2N views, self-similarities masked
  (Chen et al., ICML 2020, Algorithm 1); equal to :func:`contrastlab.losses.nt_xent`.
* :func:`tiled_supcon` - supervised contrastive loss with several positives per anchor,
  the :math:`\mathcal{L}^{sup}_{out}` form (Khosla et al., NeurIPS 2020, eq. 2).
* :func:`tiled_moco_info_nce` - queries against their own key plus a queue of negatives
  (He et al., CVPR 2020, MoCo, Algorithm 1).
* :func:`tiled_clip_loss` - CLIP's symmetric image-text cross-entropy (Radford et al., ICML
  2021, Figure 3).
* the distributed case: local rows against gathered columns, with the local rows' position in
  the global columns as a parameter (``row_offset``) in the ``*_rows`` functions;
  :func:`tiled_nt_xent`, :func:`tiled_supcon` and :func:`tiled_clip_loss` gather the columns
  with :func:`contrastlab.distributed.gather_with_grad` (the identity in one process).

Distributed normalisation: rank ``r`` returns ``(K / M) * sum_{i local} l_i / |valid anchors in
all columns|``; DDP averages gradients over the ``W = K / M`` ranks, so training optimises the
mean over the global batch exactly (also for SupCon, where ranks may hold different numbers of
anchors that have a positive). In one process (K = M) this is the plain mean.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastlab import distributed
from contrastlab.errors import ConfigError

#: Rows (and columns) per tile on the CPU when none is given (a 64 MiB float32 tile). Measured on
#: a 2-core AVX-512 CPU with D = 128 (docs/benchmarks.md): with one thread, tiles of 512-4096
#: cost within 10% of each other; with two threads on a busy CPU every parallel operation can
#: wait milliseconds for its second thread, and 4096 was 2x faster than 2048 and 6x than 1024.
DEFAULT_CHUNK_SIZE = 4096

#: On CUDA: larger tiles keep each kernel busy (not measured yet: no GPU in this project so far).
DEFAULT_CUDA_CHUNK_SIZE = 8192

#: Above this many bytes for the direct float32 logit matrix, ``nt_xent(chunk_size=None)`` tiles.
DIRECT_LOGITS_LIMIT_BYTES = 256 * 2**20

Reduction = Literal["mean", "sum", "none"]


def check_chunk_size(chunk_size: int | None) -> None:
    """Raise :class:`ConfigError` unless ``chunk_size`` is None or an int >= 1."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(
            f"loss chunk_size must be an integer >= 1 (rows per tile), got {chunk_size!r}; "
            "leave it unset to choose automatically"
        )


def default_chunk_size(device: torch.device | str) -> int:
    """Tile size used when none is given: :data:`DEFAULT_CUDA_CHUNK_SIZE` on CUDA,
    :data:`DEFAULT_CHUNK_SIZE` elsewhere."""
    return DEFAULT_CUDA_CHUNK_SIZE if torch.device(device).type == "cuda" else DEFAULT_CHUNK_SIZE


def auto_chunk_size(rows: int, columns: int, device: torch.device | str = "cpu") -> int | None:
    """The chunk size of the automatic mode: None (the direct form) while the float32 rows x
    columns logit matrix fits in :data:`DIRECT_LOGITS_LIMIT_BYTES` (256 MiB), else
    :func:`default_chunk_size`."""
    if rows * columns * 4 <= DIRECT_LOGITS_LIMIT_BYTES:
        return None
    return default_chunk_size(device)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is promoted)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _mask_self(tile: Tensor, self_offset: int | None, row_start: int, column_start: int) -> None:
    """Set the logits of row i against column ``self_offset + i`` to -inf (in place).

    In tile coordinates these entries lie on one diagonal, ``column - row = self_offset +
    row_start - column_start``; ``diagonal`` of an offset outside the tile is empty.
    """
    if self_offset is None:
        return
    offset = self_offset + row_start - column_start
    if -tile.shape[0] < offset < tile.shape[1]:
        tile.diagonal(offset).fill_(-math.inf)


class TiledLogSumExp(torch.autograd.Function):
    r""":math:`\mathrm{LSE}_i = \log \sum_{j \ne \mathrm{self}(i)} \exp(a_i^\top c_j)` for
    anchors ``a`` (M, D) and candidates ``c`` (K, D) of the same float dtype, without an M x K
    matrix; ``self_offset`` (or None) excludes column ``self_offset + i`` from row ``i``'s sum.
    Apply through :func:`tiled_logsumexp`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, anchors: Tensor, candidates: Tensor, self_offset: int | None, chunk_size: int
    ) -> Tensor:
        m, k = anchors.shape[0], candidates.shape[0]
        lse = torch.empty(m, dtype=anchors.dtype, device=anchors.device)
        buffer = torch.empty(
            min(chunk_size, m), min(chunk_size, k), dtype=anchors.dtype, device=anchors.device
        )
        for i0 in range(0, m, chunk_size):
            a = anchors[i0 : i0 + chunk_size]
            rows = a.shape[0]
            running_max = torch.full((rows,), -math.inf, dtype=anchors.dtype, device=anchors.device)
            running_sum = torch.zeros(rows, dtype=anchors.dtype, device=anchors.device)
            for j0 in range(0, k, chunk_size):
                c = candidates[j0 : j0 + chunk_size]
                tile = buffer[:rows, : c.shape[0]]
                torch.mm(a, c.t(), out=tile)
                _mask_self(tile, self_offset, i0, j0)
                new_max = torch.maximum(running_max, tile.amax(dim=1))
                # a row whose entries so far are all masked keeps max -inf; shift it by 0
                shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
                tile.sub_(shift[:, None]).exp_()
                running_sum.mul_(torch.exp(running_max - shift)).add_(tile.sum(dim=1))
                running_max = new_max
            finite_max = torch.where(
                torch.isfinite(running_max), running_max, torch.zeros_like(running_max)
            )
            lse[i0 : i0 + rows] = finite_max + running_sum.log()  # -inf for a fully masked row
        ctx.save_for_backward(anchors, candidates, lse)
        ctx.self_offset = self_offset
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse: Tensor):  # type: ignore[override]
        anchors, candidates, lse = ctx.saved_tensors
        self_offset, chunk_size = ctx.self_offset, ctx.chunk_size
        need_anchors, need_candidates = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        m, k = anchors.shape[0], candidates.shape[0]
        grad_lse = grad_lse.to(anchors.dtype)
        # a row with no column left (LSE = -inf) has no softmax: p_ij = exp(-inf - inf) = 0
        lse = lse.masked_fill(lse == -math.inf, math.inf)
        grad_anchors = torch.zeros_like(anchors) if need_anchors else None
        grad_candidates = torch.zeros_like(candidates) if need_candidates else None
        # d LSE_i / d c_j = p_ij a_i: fold g_i into the anchors once, not into every tile
        weighted_anchors = anchors * grad_lse[:, None] if need_candidates else None
        buffer = torch.empty(
            min(chunk_size, m), min(chunk_size, k), dtype=anchors.dtype, device=anchors.device
        )
        for i0 in range(0, m, chunk_size):
            a = anchors[i0 : i0 + chunk_size]
            rows = a.shape[0]
            row_lse = lse[i0 : i0 + rows, None]
            for j0 in range(0, k, chunk_size):
                c = candidates[j0 : j0 + chunk_size]
                tile = buffer[:rows, : c.shape[0]]
                torch.mm(a, c.t(), out=tile)
                _mask_self(tile, self_offset, i0, j0)
                tile.sub_(row_lse).exp_()  # p_ij, the softmax of row i restricted to the tile
                if grad_anchors is not None:
                    grad_anchors[i0 : i0 + rows].addmm_(tile, c)
                if grad_candidates is not None:
                    grad_candidates[j0 : j0 + c.shape[0]].addmm_(
                        tile.t(), weighted_anchors[i0 : i0 + rows]
                    )
        if grad_anchors is not None:
            grad_anchors.mul_(grad_lse[:, None])
        return grad_anchors, grad_candidates, None, None


def _check_matrix(name: str, tensor: Tensor) -> None:
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a (rows, D) matrix, got shape {tuple(tensor.shape)}")


def _check_same_width(**tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        _check_matrix(name, tensor)
    widths = {name: tensor.shape[1] for name, tensor in tensors.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"embedding dimensions differ: {widths}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def _check_row_offset(row_offset: int, rows: int, columns: int) -> None:
    if not 0 <= row_offset <= columns - rows:
        raise ValueError(
            f"row_offset {row_offset} does not place {rows} local rows inside {columns} columns "
            f"(need 0 <= row_offset <= {columns - rows})"
        )


def _reduce(losses: Tensor, reduction: Reduction, denominator: float | Tensor) -> Tensor:
    """``sum / denominator`` for "mean" (the caller's normaliser), sum, or the losses."""
    if reduction == "mean":
        return losses.sum() / denominator
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def tiled_logsumexp(
    anchors: Tensor,
    candidates: Tensor,
    *,
    self_offset: int | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r""":math:`\mathrm{LSE}_i = \log \sum_{j \ne \mathrm{self}(i)} \exp(a_i^\top c_j)`, computed
    in tiles of ``chunk_size`` x ``chunk_size`` with a recomputing backward.

    Args:
        anchors: (M, D) rows, already multiplied by the logit scale (1 / temperature).
        candidates: (K, D) columns.
        self_offset: if given, row ``i`` skips column ``self_offset + i`` (the anchors are
            ``candidates[self_offset : self_offset + M]``); None compares with every column.
        chunk_size: rows and columns per tile (default :func:`default_chunk_size`).

    Returns:
        (M,) log-sum-exps, float32 (float64 if an input is float64; half precision is
        promoted before the matmul). A row with no column left is -inf.
    """
    check_chunk_size(chunk_size)
    _check_same_width(anchors=anchors, candidates=candidates)
    if self_offset is not None:
        _check_row_offset(self_offset, anchors.shape[0], candidates.shape[0])
    dtype = _compute_dtype(anchors, candidates)
    return TiledLogSumExp.apply(
        anchors.to(dtype), candidates.to(dtype), self_offset,
        chunk_size or default_chunk_size(anchors.device),
    )


def tiled_info_nce(
    anchors: Tensor,
    candidates: Tensor,
    positive_index: Tensor,
    scale: float | Tensor,
    *,
    self_offset: int | None = None,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Cross-entropy of each anchor against its positive column, the general single-positive
    InfoNCE (van den Oord et al. 2018): :math:`\ell_i = \mathrm{LSE}_{j \ne \mathrm{self}(i)}
    (\sigma a_i^\top c_j) - \sigma a_i^\top c_{\mathrm{pos}(i)}`.

    The embeddings are used as given (normalise them first for cosine similarities). Equal to
    ``F.cross_entropy(scale * anchors @ candidates.T (self masked), positive_index)``.

    Args:
        anchors: (M, D).
        candidates: (K, D).
        positive_index: (M,) column index of each anchor's positive.
        scale: logit scale sigma (1 / temperature), a float or a scalar tensor (may be learned).
        self_offset: see :func:`tiled_logsumexp`.
        chunk_size: rows and columns per tile.
        reduction: "mean" over the M anchors, "sum", or "none" for the (M,) losses.
    """
    _check_same_width(anchors=anchors, candidates=candidates)
    if positive_index.shape != (anchors.shape[0],):
        raise ValueError(
            f"positive_index must have shape ({anchors.shape[0]},), got "
            f"{tuple(positive_index.shape)}"
        )
    dtype = _compute_dtype(anchors, candidates)
    anchors, candidates = anchors.to(dtype), candidates.to(dtype)
    scaled = anchors * scale
    lse = tiled_logsumexp(scaled, candidates, self_offset=self_offset, chunk_size=chunk_size)
    positive_logit = (scaled * candidates[positive_index]).sum(dim=1)
    return _reduce(lse - positive_logit, reduction, anchors.shape[0])


# ----------------------------------------------------------------------------- SimCLR NT-Xent


def tiled_nt_xent_rows(
    views: Tensor,
    columns: Tensor,
    row_offset: int,
    temperature: float = 0.5,
    *,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
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
        chunk_size: rows and columns per tile.
        reduction: "mean" gives the mean over the local 2n anchors (so the mean over ranks is
            the loss of the whole batch), "sum", or "none".
    """
    _check_temperature(temperature)
    _check_same_width(views=views, columns=columns)
    rows = views.shape[0]
    if rows % 2 or rows == 0:
        raise ValueError(f"views must hold 2n rows (first views, then second views), got {rows}")
    if columns.shape[0] < 4:
        raise ValueError(
            f"NT-Xent needs at least 2 pairs (a negative to contrast), got {columns.shape[0]} views"
        )
    _check_row_offset(row_offset, rows, columns.shape[0])
    dtype = _compute_dtype(views, columns)
    anchors = F.normalize(views.to(dtype), dim=1)
    candidates = anchors if columns is views else F.normalize(columns.to(dtype), dim=1)
    n = rows // 2
    local = torch.arange(rows, device=views.device)
    positive_index = row_offset + (local + n) % rows
    return tiled_info_nce(
        anchors, candidates, positive_index, 1.0 / temperature,
        self_offset=row_offset, chunk_size=chunk_size, reduction=reduction,
    )


def tiled_nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    r"""SimCLR's NT-Xent (Chen et al. 2020, Algorithm 1) computed in tiles; same value and
    gradients as :func:`contrastlab.losses.nt_xent`, memory O(N D + chunk_size^2).

    :math:`\ell(i, j) = -\log \frac{\exp(s_{ij}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}` with
    cosine similarities over the 2N views, averaged over the 2N anchors.

    Args:
        z1, z2: (N, D) projections of the two views (row i of each is a pair).
        temperature: tau > 0.
        chunk_size: rows and columns per tile (default :func:`default_chunk_size`).
        gather: under ``torch.distributed``, contrast the local anchors with the views of every
            rank (gathered with gradient); ignored in one process.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    views = torch.cat([z1, z2], dim=0)
    if gather and distributed.is_distributed():
        columns = distributed.gather_with_grad(views)
        row_offset = distributed.rank() * views.shape[0]
    else:
        columns, row_offset = views, 0
    return tiled_nt_xent_rows(views, columns, row_offset, temperature, chunk_size=chunk_size)


# ------------------------------------------------------------------------ SupCon (L^sup_out)


def tiled_supcon_rows(
    embeddings: Tensor,
    columns: Tensor,
    column_labels: Tensor,
    row_offset: int,
    temperature: float = 0.1,
    *,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Supervised contrastive loss :math:`\mathcal{L}^{sup}_{out}` (Khosla et al. 2020, eq. 2)
    of local anchors against K columns, several positives per anchor.

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log
                 \frac{\exp(z_i^\top z_p / \tau)}{\sum_{a \ne i} \exp(z_i^\top z_a / \tau)},
        \qquad P(i) = \{p \ne i : y_p = y_i\}

    The positive term is :math:`z_i^\top (\sum_{p: y_p = y_i} z_p - z_i)` through per-class sums,
    so no N x N mask is built. Anchors without a positive are left out.

    Args:
        embeddings: (M, D) local anchors (every view of every local sample); L2-normalised here.
        columns: (K, D) all contrasted views, ``columns[row_offset : row_offset + M]`` being
            ``embeddings``; L2-normalised here.
        column_labels: (K,) integer class labels of the columns (those of the anchors are
            ``column_labels[row_offset : row_offset + M]``).
        row_offset: position of the local anchors in ``columns``.
        temperature: tau > 0 (no tau / base_tau factor).
        reduction: "mean": ``(K / M) * sum_{local i with a positive} l_i / (number of columns
            with a positive)``, which is the mean over anchors with a positive in one process and
            makes the mean over ranks exact under DDP; "sum"; "none" gives (M,) losses with 0 for
            anchors without a positive.
    """
    _check_temperature(temperature)
    _check_same_width(embeddings=embeddings, columns=columns)
    m, k = embeddings.shape[0], columns.shape[0]
    if column_labels.shape != (k,):
        raise ValueError(f"column_labels must have shape ({k},), got {tuple(column_labels.shape)}")
    _check_row_offset(row_offset, m, k)
    dtype = _compute_dtype(embeddings, columns)
    anchors = F.normalize(embeddings.to(dtype), dim=1)
    candidates = anchors if columns is embeddings else F.normalize(columns.to(dtype), dim=1)
    scale = 1.0 / temperature
    lse = tiled_logsumexp(anchors * scale, candidates, self_offset=row_offset,
                          chunk_size=chunk_size)
    _, column_class = torch.unique(column_labels, return_inverse=True)
    num_classes = int(column_class.max()) + 1 if k else 0
    class_sum = candidates.new_zeros(num_classes, candidates.shape[1]).index_add(
        0, column_class, candidates
    )
    class_count = torch.bincount(column_class, minlength=num_classes)
    row_class = column_class[row_offset : row_offset + m]
    positive_sum = class_sum[row_class] - candidates[row_offset : row_offset + m]
    num_positives = class_count[row_class] - 1
    has_positive = num_positives > 0
    mean_positive_logit = scale * (anchors * positive_sum).sum(dim=1) / num_positives.clamp_min(1)
    losses = torch.where(has_positive, lse - mean_positive_logit, torch.zeros_like(lse))
    if reduction == "mean":
        anchors_with_positive = int((class_count[column_class] > 1).sum())
        if anchors_with_positive == 0:
            raise ValueError(
                "SupCon needs at least two views with the same label (no anchor has a positive)"
            )
        return losses.sum() * (k / m) / anchors_with_positive
    return _reduce(losses, reduction, m)


def tiled_supcon(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    r"""Supervised contrastive loss :math:`\mathcal{L}^{sup}_{out}` (Khosla et al. 2020) in
    tiles: positives are the other views with the same label, the loss of an anchor is minus
    the mean over its positives of the log-softmax, anchors without a positive are left out and
    the rest averaged. See :func:`tiled_supcon_rows`.

    Args:
        embeddings: (M, D) all views (e.g. ``torch.cat([z1, z2])`` with ``labels.repeat(2)``).
        labels: (M,) integer labels.
        temperature: tau > 0.
        chunk_size: rows and columns per tile.
        gather: under ``torch.distributed``, contrast with every rank's views.
    """
    _check_matrix("embeddings", embeddings)
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},), got {tuple(labels.shape)}"
        )
    if gather and distributed.is_distributed():
        columns = distributed.gather_with_grad(embeddings)
        column_labels = distributed.gather_no_grad(labels)
        row_offset = distributed.rank() * embeddings.shape[0]
    else:
        columns, column_labels, row_offset = embeddings, labels, 0
    return tiled_supcon_rows(
        embeddings, columns, column_labels, row_offset, temperature, chunk_size=chunk_size
    )


# ------------------------------------------------------------------------------ MoCo (queue)


def tiled_moco_info_nce(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float = 0.07,
    *,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""MoCo's InfoNCE (He et al. 2020, Algorithm 1): query :math:`q_i` against its own key
    :math:`k_i` (the positive) and the K queued keys (negatives).

    .. math::

        \ell_i = -\log \frac{\exp(q_i^\top k_i / \tau)}
                 {\exp(q_i^\top k_i / \tau) + \sum_{j=1}^{K} \exp(q_i^\top \kappa_j / \tau)}

    The queue part is a tiled log-sum-exp, joined to the positive logit with ``logaddexp``.
    Queries, keys and queue are L2-normalised here (a no-op for MoCo's normalised outputs).
    Gradients reach ``keys`` and ``queue`` only if they require grad (MoCo detaches both).

    Args:
        queries: (N, D).
        keys: (N, D), row i the positive of query i.
        queue: (K, D) negatives, K >= 0.
        temperature: tau > 0 (0.07 in MoCo).
        reduction: "mean" over the N queries, "sum" or "none".
    """
    _check_temperature(temperature)
    _check_same_width(queries=queries, keys=keys, queue=queue)
    if queries.shape != keys.shape:
        raise ValueError(
            f"queries and keys must have the same shape, got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    dtype = _compute_dtype(queries, keys, queue)
    q = F.normalize(queries.to(dtype), dim=1)
    k = F.normalize(keys.to(dtype), dim=1)
    negatives = F.normalize(queue.to(dtype), dim=1)
    scaled = q / temperature
    positive_logit = (scaled * k).sum(dim=1)
    lse_queue = tiled_logsumexp(scaled, negatives, chunk_size=chunk_size)
    losses = torch.logaddexp(positive_logit, lse_queue) - positive_logit
    return _reduce(losses, reduction, q.shape[0])


# ------------------------------------------------------------------------------ CLIP

def _check_scale(scale: float | Tensor) -> None:
    if not isinstance(scale, Tensor) and not scale > 0:
        raise ConfigError(f"logit_scale must be > 0, got {scale}")


def tiled_clip_loss_rows(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    all_image_embeddings: Tensor,
    all_text_embeddings: Tensor,
    row_offset: int,
    logit_scale: float | Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""CLIP's symmetric loss of n local pairs against K global pairs (the distributed form).

    Local image ``i`` is contrasted with every text (its own, ``all_text_embeddings[row_offset
    + i]``, is the positive) and local text ``i`` with every image; the loss is the mean of the
    two cross-entropies over the local rows. All embeddings are L2-normalised here.

    Args:
        image_embeddings, text_embeddings: (n, D) local pairs.
        all_image_embeddings, all_text_embeddings: (K, D) all pairs, the local ones at
            ``row_offset : row_offset + n``.
        row_offset: position of the local pairs.
        logit_scale: the multiplier of the cosine similarities (CLIP's ``exp(t)``), a float or
            a scalar tensor that may be learned.
        chunk_size: rows and columns per tile.
    """
    _check_scale(logit_scale)
    _check_same_width(
        image_embeddings=image_embeddings, text_embeddings=text_embeddings,
        all_image_embeddings=all_image_embeddings, all_text_embeddings=all_text_embeddings,
    )
    n, k = image_embeddings.shape[0], all_image_embeddings.shape[0]
    if text_embeddings.shape[0] != n or all_text_embeddings.shape[0] != k:
        raise ValueError(
            "image and text embeddings must come in pairs: got "
            f"{n} local images and {text_embeddings.shape[0]} texts, {k} global images and "
            f"{all_text_embeddings.shape[0]} texts"
        )
    _check_row_offset(row_offset, n, k)
    dtype = _compute_dtype(image_embeddings, text_embeddings)
    images = F.normalize(image_embeddings.to(dtype), dim=1)
    texts = F.normalize(text_embeddings.to(dtype), dim=1)
    all_images = (images if all_image_embeddings is image_embeddings
                  else F.normalize(all_image_embeddings.to(dtype), dim=1))
    all_texts = (texts if all_text_embeddings is text_embeddings
                 else F.normalize(all_text_embeddings.to(dtype), dim=1))
    positive_index = torch.arange(row_offset, row_offset + n, device=images.device)
    image_to_text = tiled_info_nce(images, all_texts, positive_index, logit_scale,
                                   chunk_size=chunk_size)
    text_to_image = tiled_info_nce(texts, all_images, positive_index, logit_scale,
                                   chunk_size=chunk_size)
    return (image_to_text + text_to_image) / 2


def tiled_clip_loss(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    logit_scale: float | Tensor,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    r"""CLIP's symmetric contrastive loss (Radford et al. 2021, Figure 3) in tiles.

    With L2-normalised embeddings and :math:`s_{ij} = \sigma\, I_i^\top T_j`:
    :math:`\mathcal{L} = \frac{1}{2}\big[\mathrm{CE}_{rows}(s, \mathrm{diag}) +
    \mathrm{CE}_{columns}(s, \mathrm{diag})\big]`, each cross-entropy a mean over the N pairs.

    Args:
        image_embeddings, text_embeddings: (N, D), row i of each a matching pair.
        logit_scale: sigma (CLIP's ``exp(t)``, learned from 1/0.07), float or scalar tensor.
        chunk_size: rows and columns per tile.
        gather: under ``torch.distributed``, contrast with every rank's pairs.
    """
    if gather and distributed.is_distributed():
        all_images = distributed.gather_with_grad(image_embeddings)
        all_texts = distributed.gather_with_grad(text_embeddings)
        row_offset = distributed.rank() * image_embeddings.shape[0]
    else:
        all_images, all_texts, row_offset = image_embeddings, text_embeddings, 0
    return tiled_clip_loss_rows(
        image_embeddings, text_embeddings, all_images, all_texts, row_offset, logit_scale,
        chunk_size=chunk_size,
    )


__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_CUDA_CHUNK_SIZE", "DIRECT_LOGITS_LIMIT_BYTES", "TiledLogSumExp",
    "auto_chunk_size", "check_chunk_size", "default_chunk_size", "tiled_clip_loss",
    "tiled_clip_loss_rows", "tiled_info_nce", "tiled_logsumexp", "tiled_moco_info_nce",
    "tiled_nt_xent", "tiled_nt_xent_rows", "tiled_supcon", "tiled_supcon_rows",
]
