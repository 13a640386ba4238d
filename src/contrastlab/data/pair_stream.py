"""Image-caption pairs streamed from WebDataset shards: each sample's image and ``.txt`` caption
read and decoded in DataLoader worker processes, batch by batch (``train-pairs`` on shards).

:func:`catalog_pair_shards` scans the shards' tar headers
(:func:`contrastlab.data.shard_scan.scan_shard_samples`): where each sample's image and its
``.txt`` member lie. A sample without a ``.txt`` member is found there, before training: it stops
the run naming ``shard::key``, or with ``skip_bad_rows`` is left out of the catalog and counted.
Nothing else is read before training.

:class:`PairEpochStream` is the pair counterpart of :class:`contrastlab.data.stream.EpochStream`
(whose order, worker scheme and error handling it shares): worker ``w`` of ``W`` reads batches
``start + w``, ``start + w + W``, ... of the epoch's order, each sample's image decoded at the
working size (:class:`~contrastlab.data.stream.SampleReader`) and its caption read with one seek,
decoded as UTF-8 and its white space collapsed
(:func:`~contrastlab.data.captions.clean_caption`). A sample whose image cannot be decoded, or
whose caption is not UTF-8 or is empty, stops training with one error naming shard and key, or
with ``skip_bad_files`` its row is given another pair of the batch (the batch keeps its size and
the order stays exact, as image streaming does) and it is reported with the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from contrastlab.data.captions import clean_caption
from contrastlab.data.decode import _DECODE_ERRORS, _describe_error
from contrastlab.data.shard_scan import scan_shard_samples
from contrastlab.data.shard_set import ShardCatalog, ShardSet, read_sample_bytes
from contrastlab.data.stream import SampleReader
from contrastlab.errors import DataError
from contrastlab.phases import phase


class CaptionError(ValueError):
    """A caption member that is not UTF-8 or is empty."""


@dataclass
class PairCatalog:
    """A shard set's image catalog with each sample's caption member.

    Attributes:
        images: where each sample's image lies (labels unused: -1).
        text_offset: per sample, where its ``.txt`` member's bytes start in its shard.
        text_size: per sample, how many bytes the caption has.
        skipped: ``shard::key: what is wrong`` of every sample left out (no caption member).
    """

    images: ShardCatalog
    text_offset: np.ndarray
    text_size: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def catalog_pair_shards(shards: ShardSet, skip_bad_rows: bool = False) -> PairCatalog:
    """Every image + caption sample of ``shards`` (from their tar headers; see the module doc).

    Raises:
        DataError: an unreadable shard; a sample without ``.txt`` (without ``skip_bad_rows``);
            no pair at all.
    """
    shard_of, offsets, sizes, text_offsets, text_sizes = [], [], [], [], []
    counts: list[int] = []
    skipped: list[str] = []
    with phase(f"cataloguing {len(shards.paths)} shard(s) of {shards.name} (images and "
               "captions)", total=len(shards.paths)) as progress:
        for number, path in enumerate(shards.paths):
            kept = 0
            for sample in scan_shard_samples(path):
                if sample.text_offset < 0:
                    message = f"{path}::{sample.key}: the sample has no .txt caption member"
                    if not skip_bad_rows:
                        raise DataError(message + " (or pass --skip-bad-files to leave such "
                                        "samples out)")
                    skipped.append(message)
                    continue
                shard_of.append(number)
                offsets.append(sample.offset)
                sizes.append(sample.size)
                text_offsets.append(sample.text_offset)
                text_sizes.append(sample.text_size)
                kept += 1
            counts.append(kept)
            progress.advance()
    if not offsets:
        more = f" ({len(skipped)} samples without a caption skipped)" if skipped else ""
        raise DataError(f"the shards of {shards.name} hold no image-caption pair{more}")
    images = ShardCatalog(
        shards=list(shards.paths), shard=np.asarray(shard_of, dtype=np.int32),
        offset=np.asarray(offsets, dtype=np.int64), size=np.asarray(sizes, dtype=np.int64),
        label=np.full(len(offsets), -1, dtype=np.int64),
        counts=np.asarray(counts, dtype=np.int64))
    return PairCatalog(images, np.asarray(text_offsets, dtype=np.int64),
                       np.asarray(text_sizes, dtype=np.int64), skipped)


class PairReader(SampleReader):
    """A :class:`~contrastlab.data.stream.SampleReader` that also reads the captions."""

    def __init__(self, catalog: PairCatalog, image_size: int, channels: int) -> None:
        super().__init__(catalog.images, image_size, channels)
        self.pairs = catalog

    def _handle(self, shard: int) -> BinaryIO:
        handle = self.handles.get(shard)
        if handle is None:
            if len(self.handles) >= 16:
                self.close()
            handle = self.handles[shard] = open(self.catalog.shards[shard], "rb")  # noqa: SIM115
        return handle

    def caption(self, sample: int) -> str:
        """The sample's caption, white space collapsed.

        Raises:
            CaptionError: not UTF-8, or empty.
        """
        size = int(self.pairs.text_size[sample])
        data = read_sample_bytes(self._handle(int(self.catalog.shard[sample])),
                                 int(self.pairs.text_offset[sample]), size)
        if len(data) != size:
            raise OSError(f"the shard ends after {len(data)} of the caption's {size} bytes "
                          "(truncated)")
        try:
            text = clean_caption(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise CaptionError(f"the .txt caption is not UTF-8 text ({error.reason})") from error
        if not text:
            raise CaptionError("the .txt caption is empty")
        return text


def read_captions(catalog: PairCatalog, count: int) -> list[str]:
    """The captions of the first ``count`` samples in catalog order (bad ones left out: they
    are reported when their batch is read)."""
    reader = PairReader(catalog, image_size=1, channels=1)
    captions: list[str] = []
    try:
        for sample in range(min(count, len(catalog))):
            try:
                captions.append(reader.caption(sample))
            except (CaptionError, OSError):
                continue
    finally:
        reader.close()
    return captions


def read_pair_batch(reader: PairReader, samples: np.ndarray, skip_bad_files: bool
                    ) -> dict[str, Any]:
    """Read ``samples`` into one batch: ``images`` uint8 (N, C, S, S), ``captions`` (N strings),
    ``skipped`` (names and reasons), ``replaced`` (the rows given another pair of the batch) and
    ``error`` (a message, or None)."""
    size, channels = reader.image_size, reader.channels
    images = np.empty((len(samples), channels, size, size), dtype=np.uint8)
    captions: list[str] = [""] * len(samples)
    good: list[int] = []
    skipped: list[str] = []
    for row, sample in enumerate(samples.tolist()):
        try:
            captions[row] = reader.caption(sample)
            images[row] = reader.decode(sample)
            good.append(row)
        except CaptionError as exc:
            skipped.append(f"{reader.name(sample)}.txt: {exc}")
        except _DECODE_ERRORS as exc:
            skipped.append(f"{reader.name(sample)}: {_describe_error(exc)}")
        if skipped and not skip_bad_files:
            return {"error": f"cannot read sample {skipped[0]}. Fix or rebuild the shard, or "
                             "pass --skip-bad-files to skip such samples (counted)"}
    if not good:
        return {"error": f"no sample of a batch of {len(samples)} could be read (first: "
                         f"{skipped[0]}); check the shards"}
    bad = sorted(set(range(len(samples))) - set(good))
    for number, row in enumerate(bad):  # a bad sample's place goes to a good pair of the batch
        source = good[number % len(good)]
        images[row], captions[row] = images[source], captions[source]
    return {"images": torch.from_numpy(images), "captions": captions, "skipped": skipped,
            "replaced": bad, "error": None}


class PairEpochStream(torch.utils.data.IterableDataset):
    """The batches ``start .. steps - 1`` of one epoch of one rank (see the module doc and
    :class:`contrastlab.data.stream.EpochStream`, whose arguments it takes), each batch's
    captions tokenised in the worker by ``tokenizer`` (``encode(texts, max_length)`` giving a
    :class:`~contrastlab.data.tokenizer.TokenBatch`), cut to the batch's longest caption:
    ``ids`` and ``mask`` (n, L) beside ``images`` and ``captions``."""

    def __init__(self, catalog: PairCatalog, order: np.ndarray, *, local_batch: int,
                 start: int, steps: int, image_size: int, channels: int,
                 skip_bad_files: bool, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.catalog, self.order = catalog, order
        self.local_batch, self.start, self.steps = local_batch, start, steps
        self.image_size, self.channels = image_size, channels
        self.skip_bad_files = skip_bad_files
        self.tokenizer, self.max_length = tokenizer, max_length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:  # a forked worker: no thread pool of the tokenizers library
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        reader = PairReader(self.catalog, self.image_size, self.channels)
        try:
            for batch in range(self.start + worker, self.steps, workers):
                samples = self.order[batch * self.local_batch:(batch + 1) * self.local_batch]
                item = read_pair_batch(reader, samples, self.skip_bad_files)
                if item["error"] is None:
                    tokens = self.tokenizer.encode(item["captions"], self.max_length)
                    length = int(tokens.mask.sum(dim=1).max())
                    item["ids"] = tokens.ids[:, :length].contiguous()
                    item["mask"] = tokens.mask[:, :length].contiguous()
                yield {"batch": batch, **item}
        finally:
            reader.close()


__all__ = ["CaptionError", "PairCatalog", "PairEpochStream", "PairReader",
           "catalog_pair_shards", "read_captions", "read_pair_batch"]
