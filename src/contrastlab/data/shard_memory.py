"""Shards decoded into memory: a whole shard set (``--stream off``, evaluation commands, the
test split of a streamed run) or the first images of one (what a streamed run computes its
channel statistics from).

Images are decoded by :func:`contrastlab.data.decode.decode_images` (thread pool, progress,
the same size and channel checks and ``skip_bad_files`` as image folders) and are named
``shard::key``.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.decode import decode_images
from contrastlab.data.shard_scan import scan_shard
from contrastlab.data.shard_set import ShardCatalog, ShardSet, catalog_shards
from contrastlab.data.split import official_splits, split_dataset
from contrastlab.errors import DataError


def _names(catalog: ShardCatalog, count: int) -> list[str]:
    """``shard::key`` of the first ``count`` samples."""
    if catalog.files:
        return [str(path) for path in catalog.shards[:count]]
    names: list[str] = []
    for shard in catalog.shards:
        if len(names) >= count:
            break
        keys = scan_shard(shard, limit=count - len(names))[3]
        names.extend(f"{shard}::{key}" for key in keys)
    return names[:count]


def decode_catalog(catalog: ShardCatalog, shards: ShardSet, *, count: int | None = None,
                   image_size: int | None, skip_bad_files: bool) -> tuple[ImageDataset,
                                                                          list[str]]:
    """The first ``count`` samples (all when None) decoded into an :class:`ImageDataset`, and
    the samples skipped under ``skip_bad_files``."""
    total = len(catalog) if count is None else min(count, len(catalog))
    names = _names(catalog, total)
    sources: list[bytes] = []
    handles: dict[int, BinaryIO] = {}
    try:
        for sample in range(total):
            shard = int(catalog.shard[sample])
            if shard not in handles:
                handles[shard] = open(catalog.shards[shard], "rb")  # noqa: SIM115
            handle = handles[shard]
            handle.seek(int(catalog.offset[sample]))
            sources.append(handle.read(int(catalog.size[sample])))
    finally:
        for handle in handles.values():
            handle.close()
    decoded = decode_images(names, sources, image_size=image_size,
                            skip_bad_files=skip_bad_files,
                            description=f"decoding {total} images of {shards.name}")
    kept = np.asarray(decoded.kept, dtype=np.int64)
    labels = None
    if catalog.has_labels:
        labels = torch.from_numpy(catalog.label[:total][kept].astype(np.int64))
    dataset = ImageDataset(images=torch.from_numpy(decoded.images), labels=labels,
                           classes=catalog.class_names(shards.classes),
                           ids=[names[i] for i in kept.tolist()], name=shards.name)
    return dataset, decoded.skipped


def read_shards(train: ShardSet, test: ShardSet | None, *, test_fraction: float,
                split_seed: int, skip_bad_files: bool, image_size: int | None) -> DatasetSplits:
    """Decode a shard set (and its official test shards) into :class:`DatasetSplits`."""
    train_data, skipped = decode_catalog(catalog_shards(train), train, image_size=image_size,
                                         skip_bad_files=skip_bad_files)
    if test is None:
        return split_dataset(train_data, test_fraction=test_fraction, split_seed=split_seed,
                             skipped=skipped)
    test_data, test_skipped = decode_catalog(catalog_shards(test), test, image_size=image_size,
                                             skip_bad_files=skip_bad_files)
    if test_data.channels != train_data.channels:
        raise DataError(f"the test shards of {test.name} have {test_data.channels}-channel "
                        f"images but the training shards {train_data.channels}-channel ones; "
                        "rebuild one of them")
    return official_splits(train_data, test_data, skipped=skipped + test_skipped)


__all__ = ["decode_catalog", "read_shards"]
