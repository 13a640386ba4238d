"""The progress bar: loss, learning rate, images/s and time remaining (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from contrastlab.phases import live_display
from contrastlab.training.callbacks import Callback

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer


class TrainingProgress:
    """A single rich progress bar over steps (or over seconds under a time budget)."""

    def __init__(self, console: Console, total: float, by_time: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            auto_refresh=False,  # no render thread competing with the step; refreshed per log
        )
        self.by_time = by_time
        self.task: TaskID = self.progress.add_task(
            "train", total=total, epoch=0, loss="-", lr="-", speed="-"
        )

    def __enter__(self) -> TrainingProgress:
        self.live = live_display()
        self.live.__enter__()  # phases (e.g. an evaluation) do not start a second live display
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.progress.stop()
        self.live.__exit__(None, None, None)

    def update(self, completed: float) -> None:
        self.progress.update(self.task, completed=completed)

    def set_stats(self, epoch: int, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.3g}",
                             speed=f"{images_per_s:,.0f}")
        self.progress.refresh()

    def note(self, message: str) -> None:
        self.progress.console.print(message)


class ProgressCallback(Callback):
    """The progress bar as a trainer callback: started with training, advanced after every step
    (by steps, or by seconds under a time budget), its statistics refreshed by every step
    record, stopped when the run ends."""

    def __init__(self) -> None:
        self.bar: TrainingProgress | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        budget = trainer.config.schedule.time_budget
        self.bar = TrainingProgress(trainer.console, budget or trainer.total_steps,
                                    by_time=budget is not None)
        self.bar.__enter__()
        self._advance(trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        self._advance(trainer)

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.bar is not None and record.get("type") == "step":
            self.bar.set_stats(record["epoch"], record["loss"], record["lr"],
                               record["images_per_s"])

    def on_loop_end(self, trainer: Trainer) -> None:
        self.on_close(trainer)

    def on_close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def _advance(self, trainer: Trainer) -> None:
        if self.bar is not None:
            budget = trainer.config.schedule.time_budget
            self.bar.update(trainer.state.elapsed if budget else trainer.state.global_step)
