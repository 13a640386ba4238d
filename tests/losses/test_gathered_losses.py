"""Every loss family's ``gather=True`` form under two real gloo processes equals the one-process
loss of the whole batch: the mean of the ranks' losses is the full loss, and each rank's
gradient of its own rows, divided by the number of ranks (DDP's averaging), is the full loss's
gradient of those rows. Direct and tiled forms both, where the family has both."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
import torch

from contrastlab.distributed import global_index
from contrastlab.losses import (
    clip_loss,
    dcl_loss,
    in_batch_info_nce,
    moco_v3_info_nce,
    npair_loss,
    nt_xent,
    siglip_loss,
    supcon_loss_views,
    triplet_loss,
)

WORLD, N, D = 2, 5, 4
LOG_SCALE = torch.tensor(1.5, dtype=torch.float64)
BIAS = torch.tensor(-2.0, dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 0, 3, 1, 4, 4, 5, 6])  # ranks hold different numbers of positives
ONE_VIEW_LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 5, 6, 7, 1])  # positives only across ranks

#: name -> loss of (a, b) for two (rows, D) batches; ``a`` and ``b`` are what each rank holds
CASES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nt_xent direct": lambda a, b: nt_xent(a, b, 0.3),
    "nt_xent tiled": lambda a, b: nt_xent(a, b, 0.3, chunk_size=3),
    "supcon": lambda a, b: supcon_loss_views([a, b], _local(LABELS), 0.2),
    "supcon one view tiled": lambda a, b: supcon_loss_views([a], _local(ONE_VIEW_LABELS), 0.2,
                                                            chunk_size=3),
    "supcon without labels": lambda a, b: supcon_loss_views([a, b], None, 0.2),
    "dcl": lambda a, b: dcl_loss(a, b, 0.2),
    "dclw": lambda a, b: dcl_loss(a, b, 0.2, 0.5),
    "npair direct": lambda a, b: npair_loss(a, b, 0.01),
    "npair tiled": lambda a, b: npair_loss(a, b, 0.01, chunk_size=2),
    "triplet batch-hard": lambda a, b: triplet_loss(
        torch.cat([a, b]), global_index(a.shape[0]).repeat(2), 0.5, "batch-hard"),
    "triplet semi-hard": lambda a, b: triplet_loss(
        torch.cat([a, b]), global_index(a.shape[0]).repeat(2), 0.5, "semi-hard"),
    "triplet random (image-major rows)": lambda a, b: _random_triplets(a, b),
    "clip direct": lambda a, b: clip_loss(a, b, LOG_SCALE),
    "clip tiled": lambda a, b: clip_loss(a, b, LOG_SCALE, chunk_size=3),
    "siglip": lambda a, b: siglip_loss(a, b, LOG_SCALE, BIAS),
    "in-batch InfoNCE": lambda a, b: in_batch_info_nce(a, b, 0.3),
    "MoCo v3 (keys detached)": lambda a, b: moco_v3_info_nce(a, b, 0.3),
}


def _random_triplets(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Random mining from the global generator, seeded alike in every process: with the rows
    laid out image by image, each rank draws the negatives one process draws for its rows."""
    torch.manual_seed(7)
    rows = torch.stack([a, b], dim=1).flatten(0, 1)
    return triplet_loss(rows, global_index(a.shape[0]).repeat_interleave(2), 0.5, "none")


def _local(labels: torch.Tensor) -> torch.Tensor:
    """This process's share of per-image labels (all of them in one process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return labels
    return labels.tensor_split(dist.get_world_size())[dist.get_rank()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, a: torch.Tensor, b: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, loss_fn in CASES.items():
            local_a = a[rank * N:(rank + 1) * N].clone().requires_grad_()
            local_b = b[rank * N:(rank + 1) * N].clone().requires_grad_()
            loss = loss_fn(local_a, local_b)
            grads = torch.autograd.grad(loss, (local_a, local_b), allow_unused=True)
            results[name] = (loss.detach(), *grads)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_forms_under_two_gloo_processes_equal_the_full_batch(tmp_path) -> None:
    import torch.multiprocessing as mp

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(WORLD * N, D, dtype=torch.float64, generator=generator)
    b = torch.randn(WORLD * N, D, dtype=torch.float64, generator=generator)
    mp.spawn(_worker, args=(_free_port(), a, b, str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, loss_fn in CASES.items():
        full_a, full_b = a.clone().requires_grad_(), b.clone().requires_grad_()
        full = loss_fn(full_a, full_b)
        full_grads = torch.autograd.grad(full, (full_a, full_b), allow_unused=True)
        mean = sum(result[name][0] for result in ranks) / WORLD
        torch.testing.assert_close(mean, full.detach(), msg=name)
        for r, result in enumerate(ranks):
            rows = slice(r * N, (r + 1) * N)
            for grad, full_grad in zip(result[name][1:], full_grads, strict=True):
                if full_grad is None:  # the keys of MoCo v3
                    assert grad is None, name
                    continue
                torch.testing.assert_close(grad / WORLD, full_grad[rows], msg=name)
