"""The plain training loop of the text and image-text runs (``train-text``, ``train-pairs``).

Epochs of shuffled batches (the order of epoch e drawn from ``seed * 1_000_003 + e``), a
warm-up + cosine learning rate over the epochs or over the time budget, a step and an epoch
record in metrics.jsonl, and a stop when the epochs or the budget are spent. What a step does is
the caller's (:data:`Step`), and so is what a checkpoint holds (``save``): the loop gives
the :class:`LoopPosition` to store and starts from a stored one, so a run killed and resumed
takes the same batches and learning rates as one that was not. The image runs have their own
trainer (mixed precision, callbacks). Under torchrun (``ddp``) every rank runs this loop on the
same batch order; the stop decision and the training time are agreed on after every step and
every checkpoint (:meth:`~contrastlab.training.ddp.Distributed.agree`), so the ranks take the
same learning rates and stop together (see :mod:`contrastlab.training.small_ddp`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.optim import set_lr, warmup_cosine
from contrastlab.training.ddp import Distributed
from contrastlab.training.signals import StopRequest

#: ``step(indices, step_number, progress)``: one optimiser step on the examples ``indices``;
#: returns the loss (non-finite: the step was skipped) and metrics for the step record.
Step = Callable[[Tensor, int, float], tuple[float, dict[str, float]]]


@dataclass
class LoopPlan:
    """How many steps a run takes: ``epochs`` of ``steps_per_epoch`` batches of ``batch_size``
    (``budget``: seconds of training instead, the epochs then unbounded)."""

    batch_size: int
    steps_per_epoch: int
    epochs: int
    budget: float | None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self) -> str:
        return (f"{self.steps_per_epoch} steps per epoch, "
                + (f"{self.budget:g} s budget" if self.budget else f"{self.epochs} epoch(s)"))


def plan_loop(items: int, batch_size: int, epochs: int, budget: float | None) -> LoopPlan:
    """The plan for ``items`` examples (a batch is at most all of them)."""
    batch = min(batch_size, items)
    return LoopPlan(batch_size=batch, steps_per_epoch=max(1, items // batch),
                    epochs=epochs if budget is None else 1_000_000, budget=budget)


@dataclass
class LoopPosition:
    """Where the loop is: ``epoch`` in progress, batches of it done, steps done, training
    seconds, the last finite loss, and the sum and count of the finite losses of the epoch so
    far (its record's mean). Saved in every checkpoint; a resumed loop starts from it."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    last_loss: float = math.nan
    epoch_loss_sum: float = 0.0
    epoch_losses: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoopPosition:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


@dataclass
class LoopEnd:
    """Where the loop stopped: the last epoch, the steps taken, the training seconds, the last
    finite loss and why it stopped (``done``, ``time_budget``, or what ``should_stop`` said:
    a signal's name, ``stop_after_step``)."""

    epoch: int
    step: int
    elapsed: float
    last_loss: float
    stop: str


def _no_stop(_: int) -> str | None:
    return None


def run_loop(plan: LoopPlan, *, items: int, seed: int, log_every: int, peak_lr: float,
             warmup_fraction: float, optimizers: Sequence[Any], step: Step,
             log: Callable[[dict[str, Any]], None], say: Callable[[str], None],
             save: Callable[[LoopPosition], None], checkpoint_every: int = 0,
             start: LoopPosition | None = None,
             should_stop: Callable[[int], str | None] = _no_stop,
             ddp: Distributed | None = None, shuffle: bool = True) -> LoopEnd:
    """Train as ``plan`` says (see the module doc) from ``start`` (a resumed run's position).

    ``save(position)`` writes a checkpoint: at the end of every epoch, every
    ``checkpoint_every`` steps within one (0: never), and when ``should_stop(steps done)``
    (asked after every step) gives a reason to stop; the write counts as training time, as in
    the image ``Trainer``. A resumed loop draws the same batches, learning rates and step
    records as the uninterrupted one.

    ``ddp``: the process group (torchrun); ``step`` returns the loss averaged over the ranks,
    ``log`` and ``save`` write on rank 0 only (``save`` is called on every rank).

    ``shuffle=False``: the step reads its batches from a stream (step number n is batch
    ``n % steps_per_epoch`` of epoch ``n // steps_per_epoch``) and is given no indices.
    """
    ddp = ddp if ddp is not None else Distributed()
    position = start or LoopPosition()
    budget, total, stop = plan.budget, plan.total_steps, "done"
    while budget is not None or position.epoch < plan.epochs:
        order = (torch.randperm(items, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + position.epoch)) if shuffle else torch.empty(0, dtype=torch.long))
        while position.batch_in_epoch < plan.steps_per_epoch:
            progress = position.elapsed / budget if budget else position.step / total
            if progress >= 1.0:
                stop = "time_budget"
                break
            started = time.perf_counter()
            lr = peak_lr * warmup_cosine(progress, warmup_fraction)
            for optimizer in optimizers:
                set_lr(optimizer, lr)
            b = position.batch_in_epoch
            loss, metrics = step(order[b * plan.batch_size:(b + 1) * plan.batch_size],
                                 position.step, progress)
            position.elapsed += time.perf_counter() - started
            position.step += 1
            position.batch_in_epoch += 1
            if math.isfinite(loss):
                position.epoch_loss_sum += loss
                position.epoch_losses += 1
                position.last_loss = loss
            number = position.step
            if number % log_every == 0 or number == 1:
                log({"type": "step", "epoch": position.epoch, "step": number, "loss": loss,
                     "lr": lr, **metrics, "elapsed": round(position.elapsed, 3)})
                say(f"step {number}" + (f"/{total}" if not budget else "")
                    + f"  epoch {position.epoch}  loss {loss:.4f}  lr {lr:.2e}  "
                    f"{position.elapsed:.0f} s")
            reason, position.elapsed = ddp.agree(should_stop(number), position.elapsed)
            if reason is not None:
                stop = reason
                break
            if (checkpoint_every and number % checkpoint_every == 0
                    and position.batch_in_epoch < plan.steps_per_epoch):
                _timed_save(save, position, ddp)
        epoch_done = position.batch_in_epoch >= plan.steps_per_epoch
        if epoch_done or stop == "time_budget":
            log({"type": "epoch", "epoch": position.epoch, "step": position.step,
                 "loss": (position.epoch_loss_sum / position.epoch_losses
                          if position.epoch_losses else None),
                 "elapsed": round(position.elapsed, 3)})
        if epoch_done:
            position.epoch += 1
            position.batch_in_epoch, position.epoch_loss_sum, position.epoch_losses = 0, 0.0, 0
        _timed_save(save, position, ddp)
        if stop != "done":
            break
    return LoopEnd(epoch=position.epoch - (position.batch_in_epoch == 0), step=position.step,
                   elapsed=position.elapsed, last_loss=position.last_loss, stop=stop)


def stop_check(request: StopRequest, stop_after_step: int | None
               ) -> Callable[[int], str | None]:
    """The loop's ``should_stop``: a signal received, or ``stop_after_step`` steps done."""
    def should_stop(steps: int) -> str | None:
        if request.received:
            return request.received
        if stop_after_step is not None and steps >= stop_after_step:
            return "stop_after_step"
        return None

    return should_stop


def _timed_save(save: Callable[[LoopPosition], None], position: LoopPosition,
                ddp: Distributed) -> None:
    started = time.perf_counter()
    save(position)
    position.elapsed += time.perf_counter() - started
    # rank 0 wrote: the ranks take the same (longest) time, hence the same learning rates
    _, position.elapsed = ddp.agree(None, position.elapsed)


__all__ = ["LoopEnd", "LoopPlan", "LoopPosition", "Step", "plan_loop", "run_loop", "stop_check"]
