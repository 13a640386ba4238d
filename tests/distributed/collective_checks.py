"""Checks run inside every rank of a spawned gloo group (test_ddp_every_method.py):
the collectives, GlobalBatchNorm and the ghost-group running estimates against one process
computing the same thing on the concatenated batch, in float64."""

from __future__ import annotations

import torch
from torch import nn

from contrastlab import distributed
from contrastlab.models.ghost_running_stats import running_statistics_over_ranks
from contrastlab.models.global_batch_norm import convert_to_global_batch_norm

TOL = {"rtol": 0.0, "atol": 1e-10}


def _global_data(world: int, rows: int, *shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(world * rows, *shape, generator=generator, dtype=torch.float64)


def check_gather_with_grad(rank: int, world: int) -> None:
    """Rank r's loss uses every rank's rows (a contrastive-style log-sum-exp of its own rows
    against all); after DDP's 1/W averaging the gradient of its rows is that of one process's
    mean loss over all rows."""
    n = 3
    full = _global_data(world, n, 4, seed=1)
    local = full[rank * n:(rank + 1) * n].clone().requires_grad_()
    gathered = distributed.gather_with_grad(local)
    assert torch.equal(gathered.detach(), full)
    rows = distributed.local_slice(world * n)
    assert (rows.start, rows.stop) == (rank * n, (rank + 1) * n)

    def per_rank_loss(anchors: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(anchors @ columns.t(), dim=1).mean() + columns.pow(3).mean()

    per_rank_loss(local, gathered).backward()
    reference = full.clone().requires_grad_()
    total = sum(per_rank_loss(reference[r * n:(r + 1) * n], reference) for r in range(world))
    (total / world).backward()
    torch.testing.assert_close(local.grad / world, reference.grad[rows], **TOL)
    labels = torch.arange(n) + 10 * rank
    assert torch.equal(distributed.gather_no_grad(labels),
                       torch.cat([torch.arange(n) + 10 * r for r in range(world)]))


def check_all_reduce(rank: int, world: int) -> None:
    full = _global_data(world, 2, 3, seed=2)
    local = full[2 * rank:2 * rank + 2].clone().requires_grad_()
    total = distributed.all_reduce_sum(local.sum(dim=0))
    torch.testing.assert_close(total, full.sum(dim=0), **TOL)
    torch.testing.assert_close(distributed.all_reduce_mean(local.sum(dim=0)),
                               full.sum(dim=0) / world, **TOL)
    # every rank holds sum(total^2); the backward sums the ranks' gradients
    total.pow(2).sum().backward()
    torch.testing.assert_close(local.grad, (2 * world * full.sum(dim=0)).expand(2, 3), **TOL)


def check_global_batch_norm(rank: int, world: int) -> None:
    n = 4
    full = _global_data(world, n, 3, 5, 5, seed=3) * 2 + 1
    upstream = _global_data(world, n, 3, 5, 5, seed=4)
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    layer = convert_to_global_batch_norm(nn.Sequential(_copy(reference)))[0]
    rows = slice(rank * n, (rank + 1) * n)
    x_full = full.clone().requires_grad_()
    x_local = full[rows].clone().requires_grad_()
    for _ in range(2):
        y = layer(x_local)
        y_ref = reference(x_full)
        torch.testing.assert_close(y, y_ref[rows], **TOL)
    (y * upstream[rows]).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x_local.grad, x_full.grad[rows], **TOL)
    for name in ("weight", "bias"):
        grad = distributed.all_reduce_sum(getattr(layer, name).grad)
        torch.testing.assert_close(grad, getattr(reference, name).grad, **TOL)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(layer, name), getattr(reference, name), **TOL)


def check_ghost_running_statistics(rank: int, world: int) -> None:
    """Ghost groups spread over ranks leave the running estimates one process would have."""
    groups_per_rank, size = 2, 3
    full = _global_data(world, groups_per_rank * size, 4, seed=5) * 3 - 1
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)).double()
    reference = _copy(network)
    for chunk in full.tensor_split(groups_per_rank * world):
        reference(chunk)
    local = full[rank * groups_per_rank * size:(rank + 1) * groups_per_rank * size]
    with running_statistics_over_ranks((network,), groups_per_rank):
        for chunk in local.tensor_split(groups_per_rank):
            network(chunk)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(network[1], name), getattr(reference[1], name),
                                   **TOL)


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def run_all(rank: int, world: int) -> None:
    assert distributed.world_size() == world and distributed.rank() == rank
    check_gather_with_grad(rank, world)
    check_all_reduce(rank, world)
    check_global_batch_norm(rank, world)
    check_ghost_running_statistics(rank, world)


__all__ = ["run_all"]
