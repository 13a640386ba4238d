"""Shard sets read in one streamed pass, for frozen features and embeddings.

:class:`StreamedImages` is a shard set (or a part of one: a train/test split, a label fraction)
that is never decoded into memory: :meth:`StreamedImages.batches` decodes its samples in
catalog order, ``batch_size`` at a time, in DataLoader worker processes
(:class:`contrastlab.data.stream.EpochStream` with the order ``samples``), the last batch
partial, each image at one working size. Only the catalog (a few bytes per sample) is held, so
the features of a shard set larger than memory are computed in one pass.

:func:`open_streamed_splits` makes the same splits as the in-memory reader
(:func:`contrastlab.data.shard_memory.read_shards`): the official ``train/`` + ``test/`` shards,
or the seeded stratified split of the catalog's labels (the same indices, since the in-memory
reader splits the decoded samples in catalog order). The working size is ``image_size`` when
given, else the size of the first images (a preview of :data:`PREVIEW_IMAGES`, which must be
squares of one size), so the pixels are those the in-memory reader decodes.

A sample that cannot be decoded fails the pass naming its shard and key; with
``skip_bad_files`` it is left out: after the pass, ``len``, ``labels`` and ``ids`` count only
the decoded samples (the in-memory reader leaves such files out too, but before splitting, so
with unreadable samples the two splits can differ by those samples' places).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from contrastlab.data.shard_set import ShardCatalog, ShardSet, scan_shard
from contrastlab.data.split import stratified_split
from contrastlab.data.stream import EpochStream, default_workers, iterate_items
from contrastlab.data.streamed import open_stream
from contrastlab.errors import DataError

#: Images decoded before the pass to find the working size and the channel count.
PREVIEW_IMAGES = 32


@dataclass
class StreamedImages:
    """Samples of a shard set, decoded batch by batch when iterated (see the module doc).

    Attributes:
        catalog: the shard set's samples (from the tar headers).
        samples: the sample numbers of this set, in the order they are decoded (ascending: the
            catalog's order).
        image_size: the working size S: every image is decoded to S x S.
        channels: every image is brought to this many channels (1 or 3).
        classes: class names indexed by label, or None.
        name: a short description of the source, for logs and errors.
        skip_bad_files: leave undecodable samples out instead of failing.
        workers: decoding worker processes (None: the CPU count less one, at most 8; 0: in this
            process).
    """

    catalog: ShardCatalog
    samples: np.ndarray
    image_size: int
    channels: int
    classes: list[str] | None
    name: str
    skip_bad_files: bool = False
    workers: int | None = None
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    skipped: list[str] = field(default_factory=list)

    def kept_samples(self) -> np.ndarray:
        """The sample numbers that the last pass decoded (all before any pass)."""
        return np.delete(self.samples, self.dropped) if len(self.dropped) else self.samples

    def __len__(self) -> int:
        return int(len(self.samples) - len(self.dropped))

    @property
    def has_labels(self) -> bool:
        return self.catalog.has_labels

    @property
    def labels(self) -> Tensor | None:
        """int64 labels (N,) of the kept samples, or None for unlabelled shards."""
        if not self.has_labels:
            return None
        return torch.from_numpy(self.catalog.label[self.kept_samples()].astype(np.int64))

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        labels = self.labels
        return None if labels is None or len(labels) == 0 else int(labels.max()) + 1

    @property
    def ids(self) -> list[str]:
        """``shard::key`` of each kept sample (reads the tar headers of their shards again)."""
        return sample_names(self.catalog, self.kept_samples())

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> StreamedImages:
        """The samples at positions ``indices`` (of the kept samples), as a new set."""
        positions = np.asarray(torch.as_tensor(indices, dtype=torch.long).numpy())
        return StreamedImages(self.catalog, self.kept_samples()[positions], self.image_size,
                              self.channels, self.classes, self.name, self.skip_bad_files,
                              self.workers)

    def batches(self, batch_size: int, workers: int | None = None) -> Iterator[Tensor]:
        """uint8 (n, C, S, S) batches of every sample in order, the last one partial, decoded by
        ``workers`` processes (None: :attr:`workers`). Samples skipped under ``skip_bad_files``
        are left out of their batch and recorded in :attr:`dropped` / :attr:`skipped`.

        Raises:
            DataError: a sample that cannot be decoded (without ``skip_bad_files``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        workers = self.workers if workers is None else workers
        workers = default_workers() if workers is None else workers
        steps = -(-len(self.samples) // batch_size)
        stream = EpochStream(self.catalog, self.samples, local_batch=batch_size, start=0,
                             steps=steps, image_size=self.image_size, channels=self.channels,
                             skip_bad_files=self.skip_bad_files)
        dropped: list[int] = []
        skipped: list[str] = []
        self.dropped = np.zeros(0, dtype=np.int64)
        for item in iterate_items(stream, workers):
            images = item["images"]
            if item["replaced"]:  # a decoded copy of another sample stands in its place: drop it
                keep = torch.ones(len(images), dtype=torch.bool)
                keep[item["replaced"]] = False
                dropped.extend(item["batch"] * batch_size + row for row in item["replaced"])
                skipped.extend(item["skipped"])
                images = images[keep]
            yield images
        self.dropped = np.asarray(dropped, dtype=np.int64)
        self.skipped = skipped


def sample_names(catalog: ShardCatalog, samples: np.ndarray) -> list[str]:
    """``shard::key`` of ``samples`` (sample numbers of ``catalog``), from the shards' headers
    (each shard that holds one of them is scanned once)."""
    if catalog.files:
        return [catalog.sample_name(sample) for sample in samples.tolist()]
    starts = catalog.starts()
    keys: dict[int, list[str]] = {}
    names: list[str] = []
    for sample in samples.tolist():
        shard = int(catalog.shard[sample])
        if shard not in keys:
            keys[shard] = scan_shard(catalog.shards[shard])[3]
        names.append(f"{catalog.shards[shard]}::{keys[shard][sample - int(starts[shard])]}")
    return names


@dataclass
class StreamedSplits:
    """A shard set's training and test sets, streamed (the counterpart of
    :class:`contrastlab.data.dataset.DatasetSplits`); ``test`` is None for unlabelled data."""

    train: StreamedImages
    test: StreamedImages | None
    skipped: list[str] = field(default_factory=list)
    official_split: bool = False


def _whole(shards: ShardSet, image_size: int | None, skip_bad_files: bool,
           workers: int | None) -> tuple[StreamedImages, list[str]]:
    """Every sample of ``shards`` and the preview's skipped samples."""
    opened = open_stream(shards, image_size=image_size, skip_bad_files=skip_bad_files,
                         preview=PREVIEW_IMAGES)
    catalog = opened.catalog
    images = StreamedImages(catalog, np.arange(len(catalog), dtype=np.int64), opened.image_size,
                            opened.channels, catalog.class_names(shards.classes), shards.name,
                            skip_bad_files, workers)
    return images, opened.skipped


def open_streamed_splits(train: ShardSet, test: ShardSet | None, *, test_fraction: float,
                         split_seed: int, image_size: int | None, skip_bad_files: bool,
                         workers: int | None = None) -> StreamedSplits:
    """Catalogue a shard set (and its official test shards) as :class:`StreamedSplits`, split
    as :func:`contrastlab.data.shard_memory.read_shards` splits it (see the module doc).

    Raises:
        DataError: unreadable shards, preview images that are not squares of one size while
            ``image_size`` is not given, test shards with another channel count, or classes too
            small to split.
    """
    whole, skipped = _whole(train, image_size, skip_bad_files, workers)
    if test is None:
        if not whole.has_labels:
            return StreamedSplits(train=whole, test=None, skipped=skipped)
        train_idx, test_idx = stratified_split(whole.catalog.label, test_fraction, split_seed)
        return StreamedSplits(train=whole.subset(train_idx), test=whole.subset(test_idx),
                              skipped=skipped)
    test_set, test_skipped = _whole(test, image_size, skip_bad_files, workers)
    if test_set.channels != whole.channels:
        raise DataError(f"the test shards of {test.name} have {test_set.channels}-channel "
                        f"images but the training shards {whole.channels}-channel ones; "
                        "rebuild one of them")
    return StreamedSplits(train=whole, test=test_set, skipped=skipped + test_skipped,
                          official_split=True)


__all__ = ["PREVIEW_IMAGES", "StreamedImages", "StreamedSplits", "open_streamed_splits",
           "sample_names"]
