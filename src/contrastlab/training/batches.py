"""Where the trainer's batches come from: one seam, two sources.

A source has ``steps_per_epoch`` and ``epoch(epoch, start)``, which yields this process's uint8
images (N, C, H, W) and labels (or None) of batches ``start, start + 1, ...`` of ``epoch`` on the
training device. Both sources make the batches of an epoch a function of (seed, epoch) (and of
the rank under torchrun), so a resumed run that starts at batch ``start`` continues exactly.

* :class:`MemoryBatches`: the training set decoded in memory; a batch is one index operation
  into it (the epoch's permutation, :func:`epoch_permutation`), each rank taking its slice of
  the global batch.
* :class:`StreamBatches`: tar shards streamed and decoded in DataLoader worker processes
  (:mod:`contrastlab.data.stream`); each rank reads its own shards
  (:mod:`contrastlab.data.stream_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from contrastlab.data.stream import EpochStream, default_workers, iterate_batches
from contrastlab.data.stream_order import epoch_order, steps_per_epoch
from contrastlab.data.streamed import StreamedData

Batch = tuple[torch.Tensor, torch.Tensor | None]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training set in ``epoch``: a function of (seed, epoch) only, so resuming
    mid-run draws the same batches as an uninterrupted run."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class MemoryBatches:
    """Batches drawn from images held in memory (on the CPU, pinned, or on the GPU)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, *, seed: int,
                 batch: int, local_batch: int, rank: int, device: torch.device) -> None:
        self.images, self.labels = images, labels
        self.seed, self.batch, self.local_batch, self.rank = seed, batch, local_batch, rank
        self.device = device
        self.steps_per_epoch = len(images) // batch

    def epoch(self, epoch: int, start: int) -> Iterator[Batch]:
        order = epoch_permutation(len(self.images), self.seed, epoch)
        for step in range(start, self.steps_per_epoch):
            index = order[step * self.batch:(step + 1) * self.batch]
            local = index[self.rank * self.local_batch:(self.rank + 1) * self.local_batch]
            local = local.to(self.images.device)
            images = self.images[local].to(self.device, non_blocking=True)
            labels = None
            if self.labels is not None:
                labels = self.labels[local].to(self.device, non_blocking=True)
            yield images, labels


class StreamBatches:
    """Batches streamed from shards, decoded in ``workers`` worker processes.

    Args:
        data: the catalogued shard set and its working size.
        seed, rank, world, local_batch: the run's seed, this process and its share of a batch.
        buffer: the shuffle buffer's size in samples.
        workers: decoding processes (None: :func:`default_workers`).
        skip_bad_files: replace undecodable samples (reported to ``on_skipped``).
        device: the training device.
        on_skipped: called with the names of the samples skipped in each batch.
    """

    def __init__(self, data: StreamedData, *, seed: int, rank: int, world: int,
                 local_batch: int, buffer: int, workers: int | None, skip_bad_files: bool,
                 device: torch.device, on_skipped: Callable[[list[str]], None]) -> None:
        self.data, self.seed, self.rank, self.world = data, seed, rank, world
        self.local_batch, self.buffer = local_batch, buffer
        self.workers = default_workers() if workers is None else workers
        self.skip_bad_files, self.device, self.on_skipped = skip_bad_files, device, on_skipped
        self.steps_per_epoch = steps_per_epoch(data.catalog.counts, seed, world, local_batch)

    def epoch(self, epoch: int, start: int) -> Iterator[Batch]:
        if start >= self.steps_per_epoch:
            return
        order = epoch_order(self.data.catalog.counts, seed=self.seed, epoch=epoch,
                            rank=self.rank, world=self.world, buffer=self.buffer,
                            length=self.steps_per_epoch * self.local_batch)
        stream = EpochStream(self.data.catalog, order, local_batch=self.local_batch,
                             start=start, steps=self.steps_per_epoch,
                             image_size=self.data.image_size, channels=self.data.channels,
                             skip_bad_files=self.skip_bad_files)
        pin = self.device.type == "cuda"
        for images, labels, skipped in iterate_batches(stream, self.workers, pin_memory=pin):
            if skipped:
                self.on_skipped(skipped)
            yield (images.to(self.device, non_blocking=True),
                   None if labels is None else labels.to(self.device, non_blocking=True))


__all__ = ["Batch", "MemoryBatches", "StreamBatches", "default_workers", "epoch_permutation"]
