"""The progress bar: loss, learning rate, images/s and time remaining (rich)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.progress.stop()

    def update(self, completed: float) -> None:
        self.progress.update(self.task, completed=completed)

    def set_stats(self, epoch: int, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.3g}",
                             speed=f"{images_per_s:,.0f}")
        self.progress.refresh()

    def note(self, message: str) -> None:
        self.progress.console.print(message)
