"""Graceful stop on SIGINT / SIGTERM: finish the current step, checkpoint, exit with a message.

The first signal only sets a flag that the training loop checks after every step; a second
SIGINT (Ctrl-C pressed again) raises ``KeyboardInterrupt`` at once, for a user who does not want
to wait. Handlers are installed only in the main thread (Python allows no other) and the previous
handlers are restored on exit.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """Context manager recording the first SIGINT/SIGTERM received while active."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = SIGNAL_NAMES.get(signal.Signals(signum), str(signum))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """Shell convention: 128 + signal number."""
        return 128 + (signal.SIGTERM if self.received == "SIGTERM" else signal.SIGINT)


__all__ = ["StopRequest"]
