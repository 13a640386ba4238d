"""Run small tensor work on one CPU thread.

Many small operations (an L-BFGS fit on a few thousand features, hundreds of few-shot episodes)
spend most of their time entering and leaving OpenMP parallel regions. On a busy machine, where
the second thread of a region often waits for a core, this made an 80 x 64 logistic regression
100x slower with 2 threads than with 1 (measured: 6 s vs 0.02 s). Work below a size threshold
therefore runs on one thread; large matrix products keep every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_WORK = 1 << 22
"""Elements below which a CPU problem counts as small (e.g. 8,000 x 512 features)."""


@contextmanager
def single_thread_if_small(elements: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Limit torch to one intra-op thread inside the block when ``elements < SMALL_WORK`` on the
    CPU; the previous thread count is restored on exit."""
    previous = torch.get_num_threads()
    limit = torch.device(device).type == "cpu" and elements < SMALL_WORK and previous > 1
    if limit:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if limit:
            torch.set_num_threads(previous)
