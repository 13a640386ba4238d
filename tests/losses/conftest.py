"""Shared fixtures of the loss tests.

``two_ranks``: run a function as two simulated ranks (threads) whose collectives really combine
both ranks, to test that a loss's statistics are reduced over the global batch.
"""


from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch


class TwoRanks:
    """Replacement collectives for two threads: each call waits for both ranks' tensors."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=30)
        self.slots: dict[int, torch.Tensor] = {}
        self.local = threading.local()

    def _combine(self, tensor: torch.Tensor, op: Callable[[torch.Tensor, torch.Tensor], Any]):
        self.slots[self.local.rank] = tensor.detach().clone()
        self.barrier.wait()
        result = op(self.slots[0], self.slots[1])
        self.barrier.wait()  # both ranks have read the slots before they are reused
        return result

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._combine(tensor, torch.add)

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._combine(tensor, torch.maximum)

    @staticmethod
    def world_size() -> int:
        return 2

    def run(self, function: Callable[[Any], Any], inputs: list[Any]) -> list[Any]:
        """``[function(inputs[0]) on rank 0, function(inputs[1]) on rank 1]``."""
        results: list[Any] = [None, None]
        errors: list[BaseException] = []

        def worker(rank: int) -> None:
            self.local.rank = rank
            try:
                results[rank] = function(inputs[rank])
            except BaseException as error:  # re-raised in the caller
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


@pytest.fixture
def two_ranks() -> TwoRanks:
    """Two simulated ranks (threads) with collectives that combine both."""
    return TwoRanks()
