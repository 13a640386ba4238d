"""Diagnostics during training: embed a fixed subset every ``diagnose_every`` epochs, log the
numbers to metrics.jsonl and raise the collapse alarm when it persists.

Records written (one per diagnosed epoch, plus one per alarm)::

    {"type": "diagnostics", "epoch": E, "step": S, "projector": {...}, "backbone": {...}}
    {"type": "alarm", "epoch": E, "step": S, "kind": "complete"|"dimensional", "space": ...,
     "message": "..."}

The diagnostics draw their subset and views from a private generator, in eval mode, so they
change neither the model, the batch-norm statistics nor any random state of the training: a run
with diagnostics trains exactly like one without. :class:`DiagnosticsCallback` is how the trainer
gets them (every ``diagnose_every`` epochs and at the end of the schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from rich.markup import escape
from torch import Tensor

from contrastlab.eval.collapse import CollapseMonitor
from contrastlab.eval.diagnostics import diagnose_method
from contrastlab.training.callbacks import Callback
from contrastlab.views import AugmentedViews

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer

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
        self.images = images
        self.views = views
        self.device = device
        self.memory_format = memory_format
        self.seed = seed
        self.monitor = CollapseMonitor(method=method_name)

    def __call__(self, method: torch.nn.Module, epoch: int, step: int, schedule_progress: float,
                 log: Callable[[dict[str, Any]], None], note: Callable[[str], None]
                 ) -> dict[str, Any]:
        """Diagnose, ``log`` the records, and ``note`` an alarm to the user;
        ``schedule_progress`` is the share of training done (the alarm ignores the first 10%,
        see :class:`CollapseMonitor`)."""
        diagnostics = diagnose_method(method, self.images, self.views, self.device,
                                      max_images=DIAGNOSED_IMAGES, seed=self.seed,
                                      memory_format=self.memory_format)
        log({"type": "diagnostics", "epoch": epoch, "step": step, **diagnostics})
        alarm = self.monitor.update(diagnostics, epoch, schedule_progress)
        if alarm is not None:
            log({"type": "alarm", "epoch": epoch, "step": step, **alarm.to_record()})
            note(f"[bold red]collapse alarm:[/bold red] {escape(alarm.message)}")
        return diagnostics


class DiagnosticsCallback(Callback):
    """Embedding diagnostics and the collapse alarm every ``every`` epochs and when the schedule
    ends (``--diagnose-every``; 0: off); once at the end for a run that took no step."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.diagnostics: EpochDiagnostics | None = None
        self.last_step: int | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not self.every:
            return
        views = AugmentedViews(trainer.image_size, trainer.train_set.channels, trainer.mean,
                               trainer.std, trainer.views.config,
                               view_configs=trainer.views.view_configs)
        dtype = trainer.compute_dtype
        self.diagnostics = EpochDiagnostics(
            trainer.train_set.images,
            lambda images, generator: [v.to(dtype) for v in views(images, generator)],
            trainer.device, trainer.memory_format, trainer.config.method.name,
            trainer.config.run.seed)

    def on_epoch_end(self, trainer: Trainer) -> dict[str, Any] | None:
        epoch = trainer.state.epoch
        if self.diagnostics is None or not (epoch % self.every == 0 or trainer.finished):
            return None
        self._diagnose(trainer)
        return {}

    def on_train_end(self, trainer: Trainer) -> dict[str, Any] | None:
        """The end of the schedule inside an epoch (a time budget) is diagnosed too."""
        if self.diagnostics is not None and self.last_step != trainer.state.global_step:
            self._diagnose(trainer)
        return None

    def _diagnose(self, trainer: Trainer) -> None:
        state = trainer.state
        self.diagnostics(trainer.method, state.epoch, state.global_step,
                         trainer.schedule_progress, trainer.log, trainer.note)
        self.last_step = state.global_step
        trainer.method.train()
