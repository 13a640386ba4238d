"""The text and image-text loops (``train-text``, ``train-pairs``) under ``torchrun``.

As for ``contrastlab train`` (:mod:`contrastlab.training.ddp`, whose :class:`Distributed` these
loops use): ``--batch-size`` is the global batch and must divide evenly over the W processes;
rank r takes rows ``[r B/W, (r+1) B/W)`` of every batch of the shared epoch order
(:func:`local_rows`). The losses gather the embeddings of every rank with exact gradients
(:func:`contrastlab.distributed.gather_columns`), so CLIP's, SigLIP's and SimCSE's negatives
are those of the global batch; each rank's loss is the mean over its own rows, and the
gradients averaged over the ranks (:meth:`Distributed.average_gradients`) are those of one
process on the whole batch. The step's loss is averaged over the ranks before the skip decision
(a non-finite loss on one rank skips the step on every rank) and for the logs.

Random state: the weights are initialised from ``seed`` on every rank and then broadcast from
rank 0 (:func:`broadcast_module`). Dropout and token drop draw from torch's global generator,
which is seeded per rank (:func:`seed_ranks`: rank 0 keeps the one-process stream, rank r > 0
starts from (seed, r)), so ranks do not repeat each other's masks. The image augmentations of
``train-pairs`` draw their parameters for the whole global batch from the shared seeded
generator and apply this rank's slice, as in the image trainer, so they equal one process's
bit for bit. A checkpoint holds every rank's global random state (:func:`rank_random_states`),
and a resumed run gives each rank its own back (:func:`restore_rank_random_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.training.ddp import Distributed

T = TypeVar("T")


def run_in_group(ddp: Distributed, fit: Callable[[], T]) -> T:
    """``fit()``, then leave the process group: after a barrier when it returned (every rank
    does), at once when it raised (the other ranks may never reach a barrier)."""
    try:
        result = fit()
    except BaseException:
        ddp.close()
        raise
    ddp.close(wait_for_all=True)
    return result


def check_global_batch(ddp: Distributed, batch: int, command: str) -> int:
    """The rows each process takes of a global batch of ``batch``.

    Raises:
        ConfigError: ``batch`` does not divide evenly over the processes (on every rank alike),
            or leaves a process fewer than 2 rows.
    """
    world = ddp.world_size
    if not ddp.enabled:
        return batch
    if batch % world or batch // world < 2:
        suggestion = max(2 * world, batch // world * world)
        raise ConfigError(
            f"{command}: batch_size {batch} is the global batch and must divide evenly over "
            f"the {world} processes, at least 2 rows each; use a multiple of {world}, e.g. "
            f"--batch-size {suggestion}")
    return batch // world


def local_rows(ddp: Distributed, indices: Tensor) -> Tensor:
    """This rank's contiguous share of a global batch's ``indices`` (all of them in one
    process); their order is the gathered embeddings' (rank-major)."""
    if not ddp.enabled:
        return indices
    share = len(indices) // ddp.world_size
    return indices[ddp.rank * share:(ddp.rank + 1) * share]


@torch.no_grad()
def broadcast_module(ddp: Distributed, module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (they are initialised from the same seed;
    this makes sure of it whatever the initialisation's kernels do)."""
    if not ddp.enabled:
        return
    for tensor in module.state_dict().values():
        if isinstance(tensor, Tensor) and tensor.numel():
            dist.broadcast(tensor, src=0)


def _rank_seed(seed: int, rank: int) -> int:
    return (seed * 1_000_003 + 7919 * rank) % (2**63)


def seed_ranks(ddp: Distributed, seed: int) -> None:
    """Seed the global generators of ranks r > 0 from (seed, r), so their dropout and token-drop
    masks differ from rank 0's (which keeps the one-process stream)."""
    if ddp.enabled and not ddp.is_main:
        torch.manual_seed(_rank_seed(seed, ddp.rank))


def rank_random_states(ddp: Distributed) -> list[dict[str, Any]] | None:
    """Every rank's global random states (rank order) on rank 0, for its checkpoint; None in one
    process and on the other ranks. Every rank must call it (a collective)."""
    if not ddp.enabled:
        return None
    from contrastlab.runs.checkpoint import capture_rng_state

    states: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(states, capture_rng_state())
    return states if ddp.is_main else None


def restore_rank_random_state(ddp: Distributed, saved: dict[str, Any], seed: int) -> None:
    """After the checkpoint's (rank 0's) random states were restored: give rank r > 0 its own
    saved states, or, when the run was checkpointed by fewer processes than now, a fresh
    stream from (seed, r, step). Dropout then differs from an uninterrupted run's only in the
    latter case."""
    if not ddp.enabled or ddp.is_main:
        return
    from contrastlab.runs.checkpoint import restore_rng_state

    states = saved.get("rank_rng") or []
    if ddp.rank < len(states):
        restore_rng_state(states[ddp.rank])
    else:
        step = int(saved["position"]["step"])
        torch.manual_seed(_rank_seed(seed, ddp.rank) + 104_729 * step)


def refuse_under_torchrun(ddp: Distributed, what: str, why: str) -> None:
    """Stop with a clear message when something the loops cannot distribute runs under
    torchrun.

    Raises:
        ConfigError: on every rank, naming ``what`` and ``why``.
    """
    if ddp.enabled:
        raise ConfigError(f"{what} cannot run under torchrun ({ddp.world_size} processes): {why}. "
                          "Run it as one process (without torchrun)")


__all__ = ["broadcast_module", "check_global_batch", "local_rows", "rank_random_states",
           "refuse_under_torchrun", "restore_rank_random_state", "seed_ranks"]
