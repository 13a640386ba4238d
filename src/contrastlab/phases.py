"""Progress of long phases (decoding a dataset, extracting features, fitting a probe) on stderr.

    with phase("decoding images of data/train", total=len(files)) as progress:
        for chunk in chunks:
            ...
            progress.advance(len(chunk))

On a terminal a bar appears once the phase has run for ``SHOW_AFTER`` seconds (short phases stay
silent); elsewhere (a log file, a pipe, CI) one line says how long the phase took when it took
longer than that. While the training progress bar is shown (``live_display``), phases print only
their closing line, since one terminal holds one live display. ``quiet()`` silences everything
(library use, tests that want clean stderr).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SHOW_AFTER = 2.0
"""Seconds a phase runs before it shows progress."""

_state = {"live_depth": 0, "quiet": 0}


@contextmanager
def live_display() -> Iterator[None]:
    """Mark that a live display (the training bar) owns the terminal while inside."""
    _state["live_depth"] += 1
    try:
        yield
    finally:
        _state["live_depth"] -= 1


@contextmanager
def quiet() -> Iterator[None]:
    """No phase output while inside."""
    _state["quiet"] += 1
    try:
        yield
    finally:
        _state["quiet"] -= 1


class Phase:
    """A running phase; :meth:`advance` counts work done."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        from rich.console import Console

        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self.start = time.perf_counter()
        self.console = Console(stderr=True)
        self.bar: Any = None
        self.task: Any = None
        self.silent = _state["quiet"] > 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self.silent:
            return
        if self.bar is None and self.elapsed >= SHOW_AFTER and self._may_show_bar():
            self._start_bar()
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def _may_show_bar(self) -> bool:
        return self.console.is_terminal and _state["live_depth"] == 0

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total, completed=self.done)

    def close(self, succeeded: bool = True) -> None:
        if self.bar is not None:
            self.bar.stop()
        if succeeded and not self.silent and self.elapsed >= SHOW_AFTER:
            count = f"{self.done:,} {self.unit}, " if self.total else ""
            self.console.print(f"{self.description}: {count}{self.elapsed:.1f} s",
                               highlight=False)


@contextmanager
def phase(description: str, total: int | None = None, unit: str = "images") -> Iterator[Phase]:
    """A long phase with optional progress (see the module docstring)."""
    running = Phase(description, total, unit)
    try:
        yield running
    except BaseException:
        running.close(succeeded=False)
        raise
    running.close()


__all__ = ["SHOW_AFTER", "Phase", "live_display", "phase", "quiet"]
