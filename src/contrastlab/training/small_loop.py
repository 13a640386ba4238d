"""The plain training loop of the text and image-text runs (``train-text``, ``train-pairs``).

Epochs of shuffled batches (the order of epoch e drawn from ``seed * 1_000_003 + e``), a
warm-up + cosine learning rate over the epochs or over the time budget, a step and an epoch
record in metrics.jsonl, and a stop when the epochs or the budget are spent. What a step does is
the caller's (:data:`Step`). The image runs have their own trainer (checkpoints, resume,
torchrun); these runs are small and have none of that yet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.optim import set_lr, warmup_cosine

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
class LoopEnd:
    """Where the loop stopped: the last epoch, the steps taken, the training seconds, the last
    finite loss and why it stopped (``done`` or ``time_budget``)."""

    epoch: int
    step: int
    elapsed: float
    last_loss: float
    stop: str


def run_loop(plan: LoopPlan, *, items: int, seed: int, log_every: int, peak_lr: float,
             warmup_fraction: float, optimizer: Any, step: Step,
             log: Callable[[dict[str, Any]], None], say: Callable[[str], None]) -> LoopEnd:
    """Train as ``plan`` says (see the module doc)."""
    number, elapsed, last_loss, stop, epoch = 0, 0.0, math.nan, "done", 0
    budget, total = plan.budget, plan.total_steps
    for epoch in range(plan.epochs):
        order = torch.randperm(items, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + epoch))
        losses: list[float] = []
        for b in range(plan.steps_per_epoch):
            progress = elapsed / budget if budget else number / total
            if progress >= 1.0:
                stop = "time_budget"
                break
            started = time.perf_counter()
            lr = peak_lr * warmup_cosine(progress, warmup_fraction)
            set_lr(optimizer, lr)
            loss, metrics = step(order[b * plan.batch_size:(b + 1) * plan.batch_size], number,
                                 progress)
            elapsed += time.perf_counter() - started
            number += 1
            if math.isfinite(loss):
                losses.append(loss)
                last_loss = loss
            if number % log_every == 0 or number == 1:
                log({"type": "step", "epoch": epoch, "step": number, "loss": loss, "lr": lr,
                     **metrics, "elapsed": round(elapsed, 3)})
                say(f"step {number}" + (f"/{total}" if not budget else "")
                    + f"  epoch {epoch}  loss {loss:.4f}  lr {lr:.2e}  {elapsed:.0f} s")
        log({"type": "epoch", "epoch": epoch, "step": number,
             "loss": sum(losses) / len(losses) if losses else None,
             "elapsed": round(elapsed, 3)})
        if stop == "time_budget":
            break
    return LoopEnd(epoch=epoch, step=number, elapsed=elapsed, last_loss=last_loss, stop=stop)


__all__ = ["LoopEnd", "LoopPlan", "Step", "plan_loop", "run_loop"]
