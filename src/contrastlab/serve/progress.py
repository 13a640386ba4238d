"""Progress of the long phases of embed, export, index build and search, on stderr (rich).

Library functions take a :data:`Phase`: ``phase(description, total)`` is a context manager that
yields ``advance(n)``; a phase with ``total=None`` has no count and shows a spinner with the
elapsed time. :func:`quiet_phase` (the default) shows nothing; the commands pass
:meth:`StderrProgress.phase`, which draws one line per phase on stderr while it runs (nothing
is left behind, and nothing is drawn when stderr is not a terminal).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]
Phase = Callable[[str, "int | None"], AbstractContextManager[Advance]]


@contextlib.contextmanager
def quiet_phase(description: str, total: int | None = None) -> Iterator[Advance]:
    """A :data:`Phase` that shows nothing."""
    yield lambda n: None


class StderrProgress:
    """The progress display of one command: ``with StderrProgress(console) as progress:`` then
    ``with progress.phase("embedding", n) as advance: ...``."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal)

    def __enter__(self) -> StderrProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """A line for ``description``: a bar over ``total`` items, or a spinner."""
        task = self.progress.add_task(description, total=total)
        try:
            yield lambda n: self.progress.advance(task, n)
        finally:
            self.progress.remove_task(task)
