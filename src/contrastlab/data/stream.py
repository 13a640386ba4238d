"""Decoding the batches of a streamed epoch in DataLoader worker processes.

:class:`EpochStream` is a ``torch.utils.data.IterableDataset`` that yields whole batches: worker
``w`` of ``W`` decodes batches ``start + w``, ``start + w + W``, ... of the epoch's order
(:mod:`contrastlab.data.stream_order`), so the DataLoader, which takes one item from each worker
in turn, hands them out in order. Each batch is a uint8 (N, C, S, S) tensor: every image is
decoded at the working size S (a JPEG at reduced scale where that is enough, Pillow's draft
mode; then shorter side to S and centre crop, as :func:`contrastlab.data.decode.decode_one`)
and brought to C channels (grey repeated to RGB; colour to grey by ITU-R 601 luma).

A sample that cannot be decoded stops training with one error naming the shard and the key, or,
with ``skip_bad_files``, is replaced by another sample of its batch (so every batch keeps its
size and the order stays exact) and reported with the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from contrastlab.data.decode import _DECODE_ERRORS, _describe_error, decode_one
from contrastlab.data.shard_set import ShardCatalog, read_sample_bytes
from contrastlab.errors import DataError

_LUMA = np.asarray([299, 587, 114], dtype=np.uint32)


def default_workers() -> int:
    """Decoding workers when not configured: the CPU count less one, between 1 and 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (C, H, W) with C in {1, 3} as ``channels`` channels."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=0)
    grey = (np.tensordot(_LUMA, image.astype(np.uint32), axes=1) + 500) // 1000
    return grey.astype(np.uint8)[None]


@dataclass
class SampleReader:
    """Reads and decodes samples of a catalog, keeping the shard files it opened."""

    catalog: ShardCatalog
    image_size: int
    channels: int

    def __post_init__(self) -> None:
        self.handles: dict[int, BinaryIO] = {}

    def name(self, sample: int) -> str:
        """``shard::key`` of a sample (its file for a folder), for messages."""
        return self.catalog.sample_name(sample)

    def raw(self, sample: int) -> bytes:
        shard = int(self.catalog.shard[sample])
        handle = self.handles.get(shard)
        if handle is None:
            if len(self.handles) >= 16:
                self.close()
            handle = self.handles[shard] = open(self.catalog.shards[shard], "rb")  # noqa: SIM115
        data = read_sample_bytes(handle, int(self.catalog.offset[sample]),
                                 int(self.catalog.size[sample]))
        if len(data) != int(self.catalog.size[sample]):
            raise OSError(f"the shard ends after {len(data)} of the sample's "
                          f"{int(self.catalog.size[sample])} bytes (truncated)")
        return data

    def decode(self, sample: int) -> np.ndarray:
        """The sample's image, uint8 (channels, image_size, image_size)."""
        return to_channels(decode_one(self.raw(sample), self.image_size), self.channels)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def decode_batch(reader: SampleReader, samples: np.ndarray, skip_bad_files: bool
                 ) -> dict[str, Any]:
    """Decode ``samples`` into one batch: ``images`` uint8 (N, C, S, S), ``labels`` int64 (N,)
    (or None), ``skipped`` (names and reasons), ``replaced`` (the rows whose sample could not be
    decoded and now hold another image of the batch) and ``error`` (a message, or None)."""
    size, channels = reader.image_size, reader.channels
    images = np.empty((len(samples), channels, size, size), dtype=np.uint8)
    good: list[int] = []
    skipped: list[str] = []
    for row, sample in enumerate(samples.tolist()):
        try:
            images[row] = reader.decode(sample)
            good.append(row)
        except _DECODE_ERRORS as exc:
            reason = f"{reader.name(sample)}: {_describe_error(exc)}"
            if not skip_bad_files:
                return {"error": f"cannot decode sample {reason}. Fix or rebuild the shard, or "
                                 "pass --skip-bad-files to skip such samples (counted)"}
            skipped.append(reason)
    if not good:
        return {"error": f"no sample of a batch of {len(samples)} could be decoded (first: "
                         f"{skipped[0]}); check the shards"}
    bad = sorted(set(range(len(samples))) - set(good))
    for number, row in enumerate(bad):  # a bad sample's place goes to a good one of the batch
        images[row] = images[good[number % len(good)]]
    labels = reader.catalog.label[samples]
    if bad:
        labels = labels.copy()
        labels[bad] = labels[[good[n % len(good)] for n in range(len(bad))]]
    has_labels = reader.catalog.has_labels
    return {"images": torch.from_numpy(images),
            "labels": torch.from_numpy(labels.astype(np.int64)) if has_labels else None,
            "skipped": skipped, "replaced": bad, "error": None}


class EpochStream(torch.utils.data.IterableDataset):
    """The batches ``start .. steps - 1`` of one epoch of one rank (see the module doc).

    Args:
        catalog: the shard set's samples.
        order: the epoch's sample numbers for this rank (at least ``steps * local_batch``;
            fewer makes the last batch partial, which is how a single pass in catalog order
            keeps every sample: ``steps = ceil(len(order) / local_batch)``).
        local_batch: images per batch.
        start: the first batch to yield (a resumed run's position in the epoch).
        steps: batches in the epoch.
        image_size, channels: the working size and channel count of every image.
        skip_bad_files: replace undecodable samples instead of failing.
    """

    def __init__(self, catalog: ShardCatalog, order: np.ndarray, *, local_batch: int,
                 start: int, steps: int, image_size: int, channels: int,
                 skip_bad_files: bool) -> None:
        super().__init__()
        self.catalog, self.order = catalog, order
        self.local_batch, self.start, self.steps = local_batch, start, steps
        self.image_size, self.channels = image_size, channels
        self.skip_bad_files = skip_bad_files

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        reader = SampleReader(self.catalog, self.image_size, self.channels)
        try:
            for batch in range(self.start + worker, self.steps, workers):
                samples = self.order[batch * self.local_batch:(batch + 1) * self.local_batch]
                yield {"batch": batch, **decode_batch(reader, samples, self.skip_bad_files)}
        finally:
            reader.close()


def iterate_items(stream: EpochStream, workers: int, pin_memory: bool = False
                  ) -> Iterator[dict[str, Any]]:
    """Each batch of ``stream`` in order as :func:`decode_batch` returns it (with ``batch``, its
    number), decoded by ``workers`` worker processes (0: in this process).

    Raises:
        DataError: a sample that cannot be decoded (without ``skip_bad_files``).
    """
    workers = max(0, min(workers, stream.steps - stream.start))
    # a private generator: the DataLoader draws its workers' base seed from it, not from the
    # global generator, whose state a resumed run must find exactly as it was saved
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=2 if workers else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(0))
    expected = stream.start
    for item in loader:
        if item["error"] is not None:
            raise DataError(item["error"])
        if item["batch"] != expected:
            raise RuntimeError(f"batch {item['batch']} arrived where {expected} was expected")
        expected += 1
        yield item


def iterate_batches(stream: EpochStream, workers: int, pin_memory: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[str]]]:
    """``(images, labels, skipped)`` of each batch of ``stream`` in order (see
    :func:`iterate_items`)."""
    for item in iterate_items(stream, workers, pin_memory):
        yield item["images"], item["labels"], item["skipped"]


def shard_names(paths: list[Path]) -> str:
    """A short description of a list of shards for messages."""
    if len(paths) == 1:
        return str(paths[0])
    return f"{paths[0]} ... {paths[-1].name} ({len(paths)} shards)"


__all__ = ["EpochStream", "SampleReader", "decode_batch", "default_workers", "iterate_batches",
           "iterate_items", "shard_names", "to_channels"]
