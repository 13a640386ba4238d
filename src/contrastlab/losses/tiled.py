r"""Memory-efficient exact InfoNCE: the log-sum-exp over columns, direct or in tiles.

Every InfoNCE-style loss here (NT-Xent, SupCon, MoCo with a queue, CLIP, N-pair) has, for anchor
:math:`i` with embedding :math:`a_i` and candidate columns :math:`c_j`, logits
:math:`s_{ij} = \sigma\, a_i^\top c_j` (scale :math:`\sigma = 1/\tau`) and the per-anchor loss

.. math::

    \ell_i = \underbrace{\log \sum_{j \ne \mathrm{self}(i)} e^{s_{ij}}}_{\mathrm{LSE}_i}
             - \frac{1}{|P(i)|} \sum_{p \in P(i)} s_{ip},

with :math:`P(i)` the positives of anchor :math:`i`. The second term is linear in the embeddings
and costs O(N D) through ordinary autograd; each loss family writes it in its own file
(``info_nce.py``, ``supcon.py``, ``moco.py``, ``clip.py``, ``triplet.py``). The first term is what
needs the M x K logit matrix, and this module computes it for all of them:
:func:`logsumexp_over_columns` forms the matrix directly while its float32 copy fits in
:data:`DIRECT_LOGITS_LIMIT_BYTES` and otherwise calls :func:`tiled_logsumexp`, in which
:class:`TiledLogSumExp` works tile by tile:

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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from contrastlab.errors import ConfigError
from contrastlab.losses.checks import check_row_offset, check_same_width

#: Rows (and columns) per tile on the CPU when none is given (a 64 MiB float32 tile); the tile
#: sizes compared are in docs/benchmarks.md ("Tiled InfoNCE").
DEFAULT_CHUNK_SIZE = 4096

#: Rows (and columns) per tile on CUDA when none is given (docs/benchmarks.md, "Tiled InfoNCE").
DEFAULT_CUDA_CHUNK_SIZE = 8192

#: Above this many bytes for the direct float32 logit matrix, the automatic mode tiles.
DIRECT_LOGITS_LIMIT_BYTES = 256 * 2**20


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


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is promoted): the dtype the
    logits and log-sum-exps are computed in."""
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


def _check_inputs(anchors: Tensor, candidates: Tensor, self_offset: int | None,
                  chunk_size: int | None) -> None:
    check_chunk_size(chunk_size)
    check_same_width(anchors=anchors, candidates=candidates)
    if self_offset is not None:
        check_row_offset(self_offset, anchors.shape[0], candidates.shape[0])


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
    _check_inputs(anchors, candidates, self_offset, chunk_size)
    dtype = compute_dtype(anchors, candidates)
    return TiledLogSumExp.apply(
        anchors.to(dtype), candidates.to(dtype), self_offset,
        chunk_size or default_chunk_size(anchors.device),
    )



def logsumexp_over_columns(
    anchors: Tensor,
    candidates: Tensor,
    *,
    self_offset: int | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r""":math:`\mathrm{LSE}_i = \log \sum_{j \ne \mathrm{self}(i)} \exp(a_i^\top c_j)`, the
    denominator of every InfoNCE form here: direct or in tiles, the same values and gradients.

    Args:
        anchors: (M, D) rows, already multiplied by the logit scale (1 / temperature).
        candidates: (K, D) columns.
        self_offset: if given, row ``i`` skips column ``self_offset + i``; None compares with
            every column.
        chunk_size: None for the automatic choice (one M x K matrix and ``torch.logsumexp``
            while its float32 copy fits in :data:`DIRECT_LOGITS_LIMIT_BYTES`, else
            :func:`tiled_logsumexp` with :func:`default_chunk_size`); an int tiles with it.

    Returns:
        (M,) log-sum-exps in :func:`compute_dtype` of the inputs.
    """
    _check_inputs(anchors, candidates, self_offset, chunk_size)
    if chunk_size is None:
        chunk_size = auto_chunk_size(anchors.shape[0], candidates.shape[0], anchors.device)
    if chunk_size is not None:
        return tiled_logsumexp(anchors, candidates, self_offset=self_offset,
                               chunk_size=chunk_size)
    dtype = compute_dtype(anchors, candidates)
    logits = anchors.to(dtype) @ candidates.to(dtype).t()
    if self_offset is not None:  # mm keeps its inputs, not its output, for backward
        logits.diagonal(self_offset).fill_(-math.inf)
    return torch.logsumexp(logits, dim=1)


__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_CUDA_CHUNK_SIZE", "DIRECT_LOGITS_LIMIT_BYTES", "TiledLogSumExp",
    "auto_chunk_size", "check_chunk_size", "compute_dtype", "default_chunk_size",
    "logsumexp_over_columns", "tiled_logsumexp",
]
