"""Collective operations that are the identity in a single process.

Losses and methods call these unconditionally; under ``torchrun`` (``torch.distributed``
initialised) they gather embeddings from every rank or reduce statistics over the global batch,
so negatives and statistics are global by default and never silently per-process.

Gradients of :func:`gather_with_grad`: rank ``r`` computes a loss ``L_r`` on the gathered tensor.
DDP averages parameter gradients over the ``W`` ranks, i.e. it optimises ``(1/W) sum_r L_r``. The
gradient of that with respect to rank ``r``'s own rows is the sum over ranks of the gradients each
rank's loss sends to those rows (divided by ``W`` later by DDP), so the backward pass all-reduces
(sums) the full gradient and keeps the local slice. With every ``L_r`` a mean over ``r``'s anchors,
this equals one process computing the mean loss over the concatenated batch.
All ranks must pass tensors of the same shape (the trainer drops the last incomplete batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (first dimension) from all ranks in rank order, keeping gradients
    for the local part; the identity in a single process."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks in rank order (no gradient): queue keys, labels."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_columns(local: Tensor, gather: bool = True) -> tuple[Tensor, int]:
    """The columns a loss contrasts its local rows with, and where the local rows sit among them.

    With ``gather`` and several processes: every rank's ``local`` concatenated in rank order with
    gradient (:func:`gather_with_grad`) and ``rank() * len(local)``. Otherwise (one process, or
    ``gather=False``): ``local`` itself and 0, so the loss is the plain one-process loss.
    """
    if gather and is_distributed():
        return gather_with_grad(local), rank() * local.shape[0]
    return local, 0


def global_index(count: int, device: torch.device | str | None = None) -> Tensor:
    """Positions of this process's ``count`` samples in the global batch (rank-major, as
    :func:`gather_with_grad` lays them out): ``arange(count) + rank() * count``. An image's
    identity for losses whose positives are the views of the same image."""
    return torch.arange(count, device=device) + rank() * count


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over ranks (a new tensor; differentiable: the backward also sums)."""
    if not is_distributed():
        return tensor
    import torch.distributed.nn.functional as dist_nn

    return dist_nn.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over ranks (differentiable)."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def local_slice(global_batch: int) -> slice:
    """The rows of a gathered tensor of ``global_batch`` rows that belong to this rank."""
    per_rank = global_batch // world_size()
    return slice(rank() * per_rank, (rank() + 1) * per_rank)


__all__ = ["all_reduce_mean", "all_reduce_sum", "gather_columns", "gather_no_grad",
           "gather_with_grad", "global_index", "is_distributed", "is_main_process", "local_slice",
           "rank", "world_size"]
