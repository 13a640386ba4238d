"""Streaming an image folder without building shards: each file is a one-sample "shard".

:func:`folder_catalog` lists a folder as the in-memory reader does (class folders, ``train/``
and ``test/``, or images only: :mod:`contrastlab.data.layout`) and describes its training
images as a :class:`contrastlab.data.shard_set.ShardCatalog` whose shards are the files
themselves (offset 0, the file's size), so the whole stream (order, workers, exact resume,
``--skip-bad-files``) is the one of tar shards. What it costs: one ``open`` and ``stat`` per
image instead of sequential reads from a few large files, which matters on network file
systems; shards (``contrastlab shards build``) are still the faster way for data read often.

:func:`should_stream_folder` is the ``--stream auto`` rule for folders: stream when the decoded
images would take more than half of the memory available now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contrastlab.data.cifar import find_cifar_folder
from contrastlab.data.idx import find_idx_files
from contrastlab.data.image_folder import list_image_tree
from contrastlab.data.layout import Part, plan_layout
from contrastlab.data.shard_format import ShardIndex
from contrastlab.data.shard_set import ShardCatalog, ShardSet

#: ``--stream auto`` streams a folder whose decoded images exceed this share of available memory.
MEMORY_SHARE = 0.5


@dataclass
class FolderStream:
    """A folder's training images as a catalog, and its official test images (or None)."""

    shards: ShardSet
    catalog: ShardCatalog
    test: list[Path] | None


def is_image_folder(spec: str) -> bool:
    """True when ``spec`` is a folder read as an image tree (not CIFAR batches, not IDX)."""
    path = Path(spec).expanduser()
    return path.is_dir() and find_cifar_folder(path) is None and not find_idx_files(path)


def _catalog(root: Path, part: Part) -> ShardCatalog:
    paths = [root / relative for relative in part.paths]
    sizes = np.fromiter((os.stat(path).st_size for path in paths), dtype=np.int64,
                        count=len(paths))
    labels = (np.full(len(paths), -1, dtype=np.int64) if part.labels is None
              else np.asarray(part.labels, dtype=np.int64))
    return ShardCatalog(shards=paths, shard=np.arange(len(paths), dtype=np.int32),
                        offset=np.zeros(len(paths), dtype=np.int64), size=sizes, label=labels,
                        counts=np.ones(len(paths), dtype=np.int64), files=True)


def folder_catalog(spec: str) -> FolderStream:
    """The training images of the image folder ``spec`` as a one-sample-per-file catalog.

    Raises:
        DataError: the layout errors of the in-memory reader (empty folder, empty class
            folder, images beside class folders, ...).
    """
    root = Path(spec).expanduser()
    files, dirs = list_image_tree(root)
    plan = plan_layout(files, dirs, lambda relative: str(root / relative) if relative
                       else str(root))
    catalog = _catalog(root, plan.train)
    name = root.name or str(root)
    shards = ShardSet(name=name, paths=catalog.shards,
                      index=ShardIndex(classes=plan.classes, counts={}))
    test = None if plan.test is None else [root / relative for relative in plan.test.paths]
    return FolderStream(shards=shards, catalog=catalog, test=test)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; the free pages where that is unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def decoded_bytes(catalog: ShardCatalog, image_size: int | None) -> int:
    """About how many bytes the images of ``catalog`` take decoded: 3 channels at ``image_size``
    (else at the size of the first image, read from its header)."""
    if len(catalog) == 0:
        return 0
    if image_size is not None:
        pixels = image_size * image_size
    else:
        with Image.open(catalog.shards[0]) as first:
            pixels = first.width * first.height
    return 3 * pixels * len(catalog)


def should_stream_folder(catalog: ShardCatalog, image_size: int | None) -> tuple[bool, int, int]:
    """``(stream, decoded bytes, available bytes)``: the ``--stream auto`` rule for folders."""
    need, have = decoded_bytes(catalog, image_size), available_memory()
    return need > MEMORY_SHARE * have, need, have


__all__ = ["MEMORY_SHARE", "FolderStream", "available_memory", "decoded_bytes",
           "folder_catalog", "is_image_folder", "should_stream_folder"]
