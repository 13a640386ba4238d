"""Diagnostics during training: embed a fixed subset every ``diagnose_every`` epochs, log the
numbers to metrics.jsonl and raise the collapse alarm when it persists.

Records written (one per diagnosed epoch, plus one per alarm)::

    {"type": "diagnostics", "epoch": E, "step": S, "projector": {...}, "backbone": {...}}
    {"type": "alarm", "epoch": E, "step": S, "kind": "complete"|"dimensional", "space": ...,
     "message": "..."}

The diagnostics draw their subset and views from a private generator, in eval mode, so they
change neither the model, the batch-norm statistics nor any random state of the training: a run
with diagnostics trains exactly like one without. ``contrastlab.eval`` is imported lazily, as
everywhere in ``train/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from rich.markup import escape
from torch import Tensor

from contrastlab.train.progress import TrainingProgress
from contrastlab.train.run_dir import RunDirectory

DIAGNOSED_IMAGES = 2000


class EpochDiagnostics:
    """Diagnose the method at the end of an epoch and watch for collapse.

    Args:
        images: the training images (uint8 N, C, H, W); a seeded subset of
            ``DIAGNOSED_IMAGES`` is used.
        views: the run's view recipe (two views with the run's normalisation).
        device, memory_format: as in training.
        method_name: for the alarm's usual causes.
        seed: seed of the subset and views (the same ones every epoch, so epochs compare).
    """

    def __init__(self, images: Tensor, views: Callable[[Tensor, torch.Generator], list[Tensor]],
                 device: torch.device, memory_format: torch.memory_format, method_name: str,
                 seed: int) -> None:
        from contrastlab.eval.collapse import CollapseMonitor

        self.images = images
        self.views = views
        self.device = device
        self.memory_format = memory_format
        self.seed = seed
        self.monitor = CollapseMonitor(method=method_name)

    def __call__(self, method: torch.nn.Module, epoch: int, step: int, schedule_progress: float,
                 run: RunDirectory, progress: TrainingProgress) -> dict[str, Any]:
        """Diagnose, log, and note an alarm; ``schedule_progress`` is the share of training
        done (the alarm ignores the first 10%, see :class:`CollapseMonitor`)."""
        from contrastlab.eval.diagnostics import diagnose_method

        diagnostics = diagnose_method(method, self.images, self.views, self.device,
                                      max_images=DIAGNOSED_IMAGES, seed=self.seed,
                                      memory_format=self.memory_format)
        run.log({"type": "diagnostics", "epoch": epoch, "step": step, **diagnostics})
        alarm = self.monitor.update(diagnostics, epoch, schedule_progress)
        if alarm is not None:
            run.log({"type": "alarm", "epoch": epoch, "step": step, **alarm.to_record()})
            progress.note(f"[bold red]collapse alarm:[/bold red] {escape(alarm.message)}")
        return diagnostics
