"""Decode once: the decoded images of a folder, archive or shard set kept on disk, so that every
later command on the same data starts in seconds.

Decoding is what makes a command on image files slow (CIFAR-10's 60,000 JPEGs take minutes on
two cores; ImageNet would take an hour), and every command (``train``, ``eval``, ``embed``,
``export``, ``report``) used to pay it again. :func:`cached_splits` keeps the result of the first
read in the cache folder (:mod:`contrastlab.data.cache_dir`) as uint8 ``.npy`` arrays, and a
later read of the same data with the same settings maps them from disk instead of decoding:
nothing is copied into memory until it is used, and pages the system needs back are simply
dropped (they are read from the file again when used).

An entry is found by a key over everything its contents depend on: the data's absolute path;
each file's relative name, size, modification and change times (a file added, removed, edited,
replaced or made unreadable changes the key); the read settings (``test_fraction``,
``split_seed``, ``skip_bad_files``, ``image_size``); and this format's version. Entries are
written atomically (a folder renamed into place), so a crash leaves no half entry; one that
cannot be written (no space, no permission) is skipped and the data is used as decoded.
``CONTRASTLAB_CACHE_DIR=off`` turns the cache off; deleting ``decoded/`` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlab.data.cache_dir import cache_root
from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.phases import phase

_VERSION = 1
#: Space left free on the cache's disk after writing an entry.
_SPARE_BYTES = 1 << 30


def fingerprint(paths: Iterable[Path]) -> str:
    """A digest of the files at ``paths`` (files, or folders walked recursively): their names
    and their size, modification and change times, in a stable order."""
    digest = hashlib.sha256()
    for path in paths:
        path = path.resolve()
        digest.update(f"{path}\0".encode())
        if path.is_file():
            _add_stat(digest, "", path.stat())
            continue
        for folder, folders, files in os.walk(path):
            folders.sort()
            relative = os.path.relpath(folder, path)
            for name in sorted(files):
                try:
                    _add_stat(digest, os.path.join(relative, name),
                              os.stat(os.path.join(folder, name)))
                except OSError:  # vanished while walking: a different key in any case
                    digest.update(f"{relative}/{name}\0gone\0".encode())
    return digest.hexdigest()


def _add_stat(digest: Any, name: str, stat: os.stat_result) -> None:
    digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0".encode())


def cache_key(paths: list[Path], settings: dict[str, Any]) -> str:
    """The key of the entry for the data at ``paths`` read with ``settings``."""
    return _key(fingerprint(paths), settings)


def _key(fingerprints: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"version": _VERSION, "files": fingerprints, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _describe(data: ImageDataset) -> dict[str, Any]:
    return {"classes": data.classes, "ids": data.ids, "name": data.name,
            "labelled": data.labels is not None, "count": len(data)}


def _save_side(folder: Path, side: str, data: ImageDataset) -> dict[str, Any]:
    np.save(folder / f"{side}-images.npy", data.images.numpy())
    if data.labels is not None:
        np.save(folder / f"{side}-labels.npy", data.labels.numpy())
    return _describe(data)


def _load_side(folder: Path, side: str, meta: dict[str, Any]) -> ImageDataset:
    # copy-on-write mapping: writable tensors whose writes never reach the file
    images = np.load(folder / f"{side}-images.npy", mmap_mode="c")
    labels = (torch.from_numpy(np.load(folder / f"{side}-labels.npy"))
              if meta["labelled"] else None)
    if images.shape[0] != meta["count"]:
        raise ValueError(f"{side}: {images.shape[0]} images, {meta['count']} expected")
    return ImageDataset(images=torch.from_numpy(images), labels=labels, classes=meta["classes"],
                        ids=meta["ids"], name=meta["name"])


def load_entry(folder: Path) -> DatasetSplits | None:
    """The splits kept in the entry ``folder``; None when it is missing or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("version") != _VERSION:
            return None
        train = _load_side(folder, "train", meta["train"])
        test = None if meta["test"] is None else _load_side(folder, "test", meta["test"])
        return DatasetSplits(train=train, test=test, skipped=list(meta["skipped"]),
                             official_split=bool(meta["official_split"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _nbytes(splits: DatasetSplits) -> int:
    sides = [splits.train] if splits.test is None else [splits.train, splits.test]
    return sum(side.images.numel() + (0 if side.labels is None else side.labels.numel() * 8)
               for side in sides)


def save_entry(folder: Path, splits: DatasetSplits) -> bool:
    """Keep ``splits`` as the entry ``folder`` (atomically); False when it was not written."""
    size = _nbytes(splits)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(folder.parent).free < size + _SPARE_BYTES:
            return False
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            meta = {"version": _VERSION, "skipped": splits.skipped,
                    "official_split": splits.official_split,
                    "train": _save_side(tmp, "train", splits.train),
                    "test": None if splits.test is None else _save_side(tmp, "test",
                                                                        splits.test)}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError:  # no space, no permission, or another process wrote it first
        return False
    return True


def _square(splits: DatasetSplits, size: int) -> bool:
    sides = [splits.train] if splits.test is None else [splits.train, splits.test]
    return all(side.image_size == (size, size) for side in sides)


def cached_splits(paths: list[Path], settings: dict[str, Any], description: str,
                  read: Callable[[], DatasetSplits]) -> DatasetSplits:
    """The splits ``read()`` returns for the data at ``paths``: from the cache when an entry for
    them and ``settings`` exists, else read (decoded) and then kept in the cache.

    With an ``image_size`` S, an entry read without one whose images are already S x S serves
    too (a command that passes the encoder's working size, such as ``embed``, then finds what
    ``train`` and ``eval`` kept).
    """
    root = cache_root()
    if root is None:
        return read()
    with phase(f"checking the decoded-image cache for {description}"):
        fingerprints = fingerprint(paths)
        folder = root / "decoded" / _key(fingerprints, settings)
        found = load_entry(folder) if folder.is_dir() else None
        size = settings.get("image_size")
        if found is None and size is not None:
            unsized = root / "decoded" / _key(fingerprints, {**settings, "image_size": None})
            found = load_entry(unsized) if unsized.is_dir() else None
            if found is not None and not _square(found, size):
                found = None
    if found is not None:
        return found
    splits = read()
    with phase(f"keeping the decoded images of {description} in {folder.parent} "
               f"({_nbytes(splits) / 2**20:,.0f} MiB; CONTRASTLAB_CACHE_DIR=off turns this off)"):
        save_entry(folder, splits)
    return splits


__all__ = ["cache_key", "cached_splits", "fingerprint", "load_entry", "save_entry"]
