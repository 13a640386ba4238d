"""Callbacks: what the trainer hands work to (evaluation, diagnostics, progress, loggers).

The trainer knows nothing about kNN, the collapse alarm or TensorBoard: it calls these hooks, in
the order the callbacks were given, on the main process only (rank 0 under torchrun; the other
ranks wait). Every hook is optional.

* ``on_train_start(trainer)``: after setup (data, model, resume), before the first step.
* ``on_step_end(trainer)``: after every step (the step's bookkeeping is in ``trainer.state``).
* ``on_record(trainer, record)``: after every record is appended to metrics.jsonl (the source of
  truth; loggers copy records to their tracker here).
* ``on_loop_end(trainer)``: the last step has been taken (the schedule is done or a stop came).
* ``on_epoch_end(trainer)``: after an epoch; return scores (``{"knn_top1": ...}``) to log as an
  ``eval`` record (the best kNN score picks best.pt), ``{}`` when work was done without scores,
  or ``None`` when the callback did nothing this epoch.
* ``on_train_end(trainer)``: after the last step of a finished run; return the final scores.
* ``on_close(trainer)``: always last, also after an error (flush and close files).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer


class Callback:
    """Base class of trainer callbacks; override the hooks you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Setup is done; the first step is next."""

    def on_step_end(self, trainer: Trainer) -> None:
        """A step has been taken (or skipped as non-finite)."""

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """``record`` was appended to metrics.jsonl."""

    def on_epoch_end(self, trainer: Trainer) -> dict[str, Any] | None:
        """An epoch ended; scores to log, ``{}``, or ``None`` when nothing was done."""
        return None

    def on_loop_end(self, trainer: Trainer) -> None:
        """No more steps will be taken (finished or stopped)."""

    def on_train_end(self, trainer: Trainer) -> dict[str, Any] | None:
        """Training finished (not interrupted); the final scores, if any."""
        return None

    def on_close(self, trainer: Trainer) -> None:
        """The run is over (finished, interrupted or failed)."""


__all__ = ["Callback"]
