"""The trainer's side of multi-process training (``torchrun``): process group, rank-0-only work,
agreement between ranks.

Under ``torchrun --nproc_per_node P -m contrastlab train ...`` every process runs the same
:class:`contrastlab.training.Trainer`. :func:`setup_distributed` joins the process group (gloo
on the CPU, NCCL on CUDA with one GPU per process, ``LOCAL_RANK``) or uses one the caller
initialised.
``--batch-size`` is the global batch: rank r trains on rows ``[r B/W, (r+1) B/W)`` of every batch
of the shared epoch permutation, so W processes train like one process on the whole batch
(see docs/distributed.md).

Ranks must take the same decisions at the same steps or a collective hangs, so everything a rank
could see differently is agreed on: the run folder name (rank 0's), a stop signal or the time
budget (one all-reduce per step of ``[stop, elapsed]``), the success of a rank-0-only write (the
run folder check, checkpoints) and the global random state after rank-0-only evaluation. The
step's loss and metrics are averaged over ranks (one more all-reduce) for logging.
Logging, the progress bar, checkpoint writing and evaluation happen on rank 0 only.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from contrastlab.errors import CheckpointError, ConfigError, ContrastlabError, DataError
from contrastlab.runs.directory import RunDirectory

T = TypeVar("T")

#: stop codes agreed over ranks (the largest wins)
STOP_REASONS = (None, "stop_after_step", "SIGINT", "SIGTERM")


@dataclass
class Distributed:
    """This process's place in the group; ``world_size == 1`` is the single-process case, in
    which every method is the identity and costs nothing."""

    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")
    #: whether :func:`setup_distributed` created the group (and :meth:`close` destroys it)
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ agreement
    def _tensor(self, values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        # NCCL reduces CUDA tensors only; gloo CPU tensors
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.tensor(values, dtype=dtype, device=device)

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._broadcast_device())
        return box[0]

    def _broadcast_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None

    def agree(self, stop_reason: str | None, elapsed: float) -> tuple[str | None, float]:
        """The same stop decision and training time on every rank: the most severe stop
        reason of any rank (a signal may reach the ranks at different steps) and the longest
        elapsed time (the schedule and the time budget then agree)."""
        if not self.enabled:
            return stop_reason, elapsed
        values = self._tensor([float(STOP_REASONS.index(stop_reason)), elapsed])
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        code, agreed = values.tolist()
        return STOP_REASONS[int(code)], agreed

    def mean_step(self, loss: torch.Tensor, metrics: dict[str, float]
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss (0-d, no gradient) and metrics averaged over ranks, in one
        collective: the global batch's loss when each rank's loss is the mean over its own
        samples (and the same value when every rank computes the global loss)."""
        if not self.enabled:
            return loss, metrics
        keys = sorted(metrics)
        values = torch.cat([loss.detach().reshape(1).to(torch.float64),
                            self._tensor([float(metrics[k]) for k in keys])
                            .to(loss.device)])
        dist.all_reduce(values)
        values = values / self.world_size
        averaged = dict(zip(keys, values[1:].tolist(), strict=True))
        return values[0].to(loss.dtype), averaged

    def on_main(self, action: Callable[[], T]) -> T | None:
        """Run ``action`` on rank 0 only; the others wait for it. A user error it raises
        (:class:`ContrastlabError`, e.g. an unwritable folder or a failed checkpoint write) is
        raised on every rank, so no rank waits forever for a peer that stopped."""
        if not self.enabled:
            return action()
        failure: tuple[str, str] | None = None
        result = None
        if self.is_main:
            try:
                result = action()
            except ContrastlabError as error:
                failure = (type(error).__name__, str(error))
        failure = self.from_main(failure)
        if failure is not None:
            if self.is_main:
                raise _ERRORS[failure[0]](failure[1])
            raise _ERRORS[failure[0]](f"rank 0 stopped: {failure[1]}")
        return result

    def share_random_state(self) -> None:
        """Give every rank rank 0's global torch random state (CPU and this rank's GPU).

        Random draws inside a training step (MAE's masks, random triplet negatives) are made
        for the global batch from the global generator and must agree on every rank; rank-0-only
        work (evaluation) or a checkpoint's per-device CUDA states could make them differ.
        """
        if not self.enabled:
            return
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        states = self.from_main(states)
        torch.set_rng_state(states[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1], self.device)

    def run_directory(self, root: str, resume: bool) -> RunDirectory:
        """The run folder, prepared (created, checked) by rank 0; on the other ranks its
        writers do nothing (rank 0 logs and writes)."""
        run = RunDirectory(root) if self.is_main else _SilentRunDirectory(root)
        self.on_main(lambda: run.prepare(resume))
        return run

    # ------------------------------------------------------------------ the model
    def wrap(self, method: nn.Module) -> nn.Module:
        """``method`` in DistributedDataParallel (gradients averaged over ranks during the
        backward pass); ``method`` itself in one process.

        Buffers are not broadcast at every forward: queues, centres, EMA teachers and the
        global batch norm's running estimates are updated identically on every rank from
        global quantities. ``find_unused_parameters`` for methods that leave parameters without
        gradient on some steps (``Method.unused_parameters``: frozen prototypes or last layer);
        DDP then leaves those gradients unset, as one process would.
        """
        if not self.enabled:
            return method
        from torch.nn.parallel import DistributedDataParallel

        options = inspect.signature(DistributedDataParallel.__init__).parameters
        no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in options
                          else {"broadcast_buffers": False})
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            method, device_ids=device_ids,
            find_unused_parameters=bool(getattr(method, "unused_parameters", True)),
            **no_buffer_sync)

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[object]:
        """DistributedDataParallel's ``no_sync()`` (no gradient all-reduce during the backward
        passes inside it); a no-op context in one process."""
        if self.enabled and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Average ``.grad`` over the ranks, as DistributedDataParallel's reducer does during a
        backward pass; for steps that bypass DDP's forward (GradCache, ``--micro-batch``). One
        all-reduce of the gradients flattened into a single buffer. Every rank must hold
        gradients for the same parameters (the GradCache methods train all of theirs)."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def close(self, wait_for_all: bool = False) -> None:
        """Leave the process group if :func:`setup_distributed` created it; ``wait_for_all``
        (every rank finished normally): first a barrier, so that no rank tears its connections
        down while another is still in its last collective (gloo then aborts the process with
        "terminate called without an active exception")."""
        if self.owns_group and dist.is_initialized():
            if wait_for_all and self.enabled:
                dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False


class _SilentRunDirectory(RunDirectory):
    """The run folder as seen by ranks other than 0: paths only, no writes."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def write_final(self, metrics: dict[str, Any]) -> None:
        pass


_ERRORS: dict[str, type[ContrastlabError]] = {
    cls.__name__: cls for cls in (ContrastlabError, ConfigError, CheckpointError, DataError)
}


def launched_by_torchrun() -> bool:
    """True when the environment describes a group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group described by ``torchrun``'s environment variables (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), or use the group the caller
    already initialised. CUDA: this process uses GPU ``LOCAL_RANK`` and NCCL; CPU: gloo.

    Returns a one-process :class:`Distributed` when there is no group of two or more.
    """
    owns = False
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return Distributed(device=device)
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are "
                    "visible; start at most one process per GPU (torchrun --nproc_per_node)"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    elif device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        torch.cuda.set_device(device)
    world = dist.get_world_size()
    if world == 1:
        return Distributed(device=device, owns_group=owns)
    return Distributed(world_size=world, rank=dist.get_rank(), device=device, owns_group=owns)


__all__ = ["Distributed", "launched_by_torchrun", "setup_distributed"]
