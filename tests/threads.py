"""One torch thread for a test's duration, the thread count restored after: the tests whose
results are compared with a subprocess's (which runs with OMP_NUM_THREADS=1), and those made of
tiny operations, for which a second thread on the shared 2-core CPU only adds waiting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread; restore the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


__all__ = ["one_thread"]
