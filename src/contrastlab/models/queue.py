"""A first-in first-out queue of feature vectors kept in a registered buffer.

MoCo's dictionary of negative keys (He et al. 2020, Sec. 3.2), NNCLR's support set (Dwibedi et al.
2021, Sec. 3.2) and SwAV's feature queue (Caron et al. 2020, Sec. 4.3) all keep the newest ``K``
vectors. This one holds any ``K`` (no divisibility assumption with the batch size): a batch is
written at the pointer and wraps around the end. :meth:`ordered` returns the contents oldest
first, so tests (and users) can check the queue holds the newest ``K`` in order. The buffers are
part of the module's ``state_dict``, so checkpoints and resume include the queue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureQueue(nn.Module):
    """``size`` x ``dim`` queue. ``filled`` counts valid rows until the queue is full.

    Args:
        size: number of vectors kept, >= 1.
        dim: dimension of each vector.
        normalize_init: fill the initial (not yet valid) rows with random unit vectors, as MoCo's
            reference code does; :meth:`valid` returns only rows written so far either way.
    """

    def __init__(self, size: int, dim: int, normalize_init: bool = True) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got {size} and {dim}")
        initial = torch.randn(size, dim)
        if normalize_init:
            initial = nn.functional.normalize(initial, dim=1)
        self.register_buffer("features", initial)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def enqueue(self, batch: Tensor) -> None:
        """Write ``batch`` (B, dim) as the newest entries, dropping the oldest ones."""
        batch = batch.detach().to(self.features.dtype)
        if batch.shape[0] >= self.size:  # only the newest `size` rows survive
            batch = batch[-self.size :]
        count = batch.shape[0]
        start = int(self.pointer)
        end = start + count
        if end <= self.size:
            self.features[start:end] = batch
        else:
            first = self.size - start
            self.features[start:] = batch[:first]
            self.features[: count - first] = batch[first:]
        self.pointer.fill_(end % self.size)
        self.filled.fill_(min(int(self.filled) + count, self.size))

    def valid(self) -> Tensor:
        """The rows written so far (all rows once full), in storage order."""
        if int(self.filled) >= self.size:
            return self.features
        return self.features[: int(self.filled)]

    def ordered(self) -> Tensor:
        """Valid rows oldest first."""
        if int(self.filled) < self.size:
            return self.features[: int(self.filled)]
        start = int(self.pointer)
        return torch.cat([self.features[start:], self.features[:start]])


__all__ = ["FeatureQueue"]
