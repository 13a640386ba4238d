"""Finding a shard set from a ``--data`` spec and cataloguing its samples from the tar headers.

A spec names shards when it is

* a brace pattern, ``data/shards/{000000..000099}.tar`` (every named shard must exist);
* a folder holding ``shards.json`` or only ``.tar`` files (no sub-folders, no images);
* a folder with a ``train/`` shard folder, and optionally ``test/`` (or ``val/``) beside it: the
  official split, as for image folders.

:func:`catalog_shards` reads the tar headers only, or the catalog files that keep them
(:mod:`contrastlab.data.shard_catalog_file`), never the images: where each sample's image lies
in its shard (offset and size) and its label. A sample's image is then read with one
seek and one read (:func:`read_sample_bytes`), which is what lets a stream skip samples without
reading or decoding them. :func:`contrastlab.data.shard_scan.scan_shard_samples` also records
each sample's ``.txt`` member (its caption, for image-caption pairs:
:mod:`contrastlab.data.captions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.data.decode import is_image_name
from contrastlab.data.shard_catalog_file import shard_catalog
from contrastlab.data.shard_format import (
    INDEX_NAME,
    ShardIndex,
    expand_braces,
    is_brace_pattern,
    read_index,
)
from contrastlab.data.shard_scan import scan_shard
from contrastlab.errors import DataError
from contrastlab.phases import phase

_TEST_NAMES = ("test", "val")


@dataclass
class ShardSet:
    """The shards of one side (training or test) of a dataset.

    Attributes:
        name: a short name for logs and messages.
        paths: the shard files, in order.
        index: the folder's ``shards.json``, when there is one.
    """

    name: str
    paths: list[Path]
    index: ShardIndex | None = None

    @property
    def classes(self) -> list[str] | None:
        return None if self.index is None else self.index.classes

    def counts_of_index(self) -> list[int] | None:
        """Each shard's sample count according to the index (None without one)."""
        if self.index is None or not all(path.name in self.index.counts for path in self.paths):
            return None
        return [self.index.counts[path.name] for path in self.paths]


def _is_shard_folder(folder: Path) -> bool:
    """A folder of shards: it has an index file, or ``.tar`` files and neither sub-folders nor
    images."""
    if (folder / INDEX_NAME).is_file():
        return True
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    tars = [entry for entry in entries if entry.is_file() and entry.name.lower().endswith(".tar")]
    return bool(tars) and not any(entry.is_dir() or is_image_name(entry.name)
                                  for entry in entries)


def _folder_set(folder: Path, name: str) -> ShardSet:
    """The shard set of a shard folder: the index's shards (in its order), else every .tar."""
    index = read_index(folder)
    if index is not None:
        paths = [folder / shard for shard in index.counts]
        _check_exist(paths, f"the index {folder / INDEX_NAME}")
    else:
        paths = sorted(path for path in folder.iterdir()
                       if path.is_file() and path.name.lower().endswith(".tar")
                       and not path.name.startswith("."))
    if not paths:
        raise DataError(f"the shard folder {folder} holds no .tar shards; build them with "
                        "'contrastlab shards build --data FOLDER --out DIR'")
    return ShardSet(name=name, paths=paths, index=index)


def _check_exist(paths: list[Path], named_by: str) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"shard {missing[0]}{more} named by {named_by} does not exist; restore "
                        "it, fix the pattern, or rebuild the shards")


def find_shard_sets(spec: str) -> tuple[ShardSet, ShardSet | None] | None:
    """The training shards and the official test shards (or None) that ``spec`` names; None
    when ``spec`` does not name shards (see the module doc).

    Raises:
        DataError: a missing shard of a pattern or index, an empty shard folder.
    """
    if is_brace_pattern(spec):
        paths = [Path(name).expanduser() for name in expand_braces(spec)]
        _check_exist(paths, f"the pattern {spec!r}")
        index = read_index(paths[0].parent)
        if index is not None and not all(path.name in index.counts for path in paths):
            index = ShardIndex(classes=index.classes, counts={}, max_side=index.max_side)
        return ShardSet(name=paths[0].parent.name or spec, paths=paths, index=index), None
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return None
    if _is_shard_folder(folder):
        return _folder_set(folder, folder.name or str(folder)), None
    train = folder / "train"
    if train.is_dir() and _is_shard_folder(train):
        test = next((folder / name for name in _TEST_NAMES if (folder / name).is_dir()), None)
        test_set = None if test is None else _folder_set(test, f"{folder.name} ({test.name})")
        return _folder_set(train, f"{folder.name} (train)"), test_set
    return None


@dataclass
class ShardCatalog:
    """Every sample of a shard set, from its tar headers: a few bytes per sample.

    Attributes:
        shards: the shard files.
        shard: per sample, the index of its shard in ``shards``.
        offset: per sample, where its image's bytes start in the shard file.
        size: per sample, how many bytes its image has.
        label: per sample, its class index (-1 without a ``.cls`` member).
        counts: samples per shard.
        files: True when the "shards" are image files, one sample each at offset 0 (a folder
            streamed without shards, :mod:`contrastlab.data.folder_stream`).
    """

    shards: list[Path]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    counts: np.ndarray
    files: bool = False

    def sample_name(self, sample: int) -> str:
        """``shard::key`` of a sample (its file for a folder), for messages (rescans its
        shard's headers)."""
        shard = self.shards[int(self.shard[sample])]
        if self.files:
            return str(shard)
        return f"{shard}::{key_at(shard, int(self.offset[sample]))}"

    def __len__(self) -> int:
        return int(self.shard.shape[0])

    @property
    def has_labels(self) -> bool:
        return len(self) > 0 and bool((self.label >= 0).all())

    def class_names(self, named: list[str] | None) -> list[str] | None:
        """``named`` (the index's class names), else "0", "1", ... up to the largest label
        (None for unlabelled shards)."""
        if named is not None or not self.has_labels:
            return named
        return [str(label) for label in range(int(self.label.max()) + 1)]

    def subset(self, samples: np.ndarray) -> ShardCatalog:
        """The samples numbered ``samples`` of this catalog (kept in catalog order, so still
        stored shard after shard; shards may be left with no sample)."""
        samples = np.sort(np.asarray(samples, dtype=np.int64))
        shard = self.shard[samples]
        return ShardCatalog(shards=self.shards, shard=shard, offset=self.offset[samples],
                            size=self.size[samples], label=self.label[samples],
                            counts=np.bincount(shard, minlength=len(self.shards)).astype(
                                np.int64), files=self.files)

    def starts(self) -> np.ndarray:
        """The first sample of each shard (samples are stored shard after shard)."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


def catalog_shards(shards: ShardSet) -> ShardCatalog:
    """Every sample of ``shards`` (with progress): each shard's catalog file where a valid one
    exists, else a scan of its tar headers (see :mod:`contrastlab.data.shard_catalog_file`)."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with phase(f"cataloguing {len(shards.paths)} shard(s) of {shards.name}",
               total=len(shards.paths)) as progress:
        for path in shards.paths:
            parts.append(shard_catalog(path))
            progress.advance()
    counts = np.asarray([len(offsets) for offsets, _, _ in parts], dtype=np.int64)
    expected = shards.counts_of_index()
    if expected is not None and counts.tolist() != expected:
        shard = next(i for i, (a, b) in enumerate(zip(counts, expected, strict=True)) if a != b)
        raise DataError(f"shard {shards.paths[shard]} holds {counts[shard]} images but "
                        f"{INDEX_NAME} says {expected[shard]}: the shard was changed or "
                        "replaced; rebuild the shards (or delete the index)")
    catalog = ShardCatalog(
        shards=list(shards.paths),
        shard=np.repeat(np.arange(len(parts), dtype=np.int32), counts),
        offset=np.concatenate([p[0] for p in parts]),
        size=np.concatenate([p[1] for p in parts]),
        label=np.concatenate([p[2] for p in parts]),
        counts=counts,
    )
    labelled = catalog.label >= 0
    if labelled.any() and not labelled.all():
        first = int(np.argmin(labelled))
        raise DataError(f"some samples of {shards.name} have a .cls label and some do not (e.g. "
                        f"sample {first - int(catalog.starts()[catalog.shard[first]])} of shard "
                        f"{catalog.shards[catalog.shard[first]]}); label all or none")
    classes = shards.classes
    if classes is not None and labelled.any() and int(catalog.label.max()) >= len(classes):
        raise DataError(f"{shards.name} has the class index {int(catalog.label.max())} but its "
                        f"index names {len(classes)} classes; rebuild the shards")
    return catalog


def key_at(path: Path, offset: int) -> str:
    """The key of the sample whose image starts at ``offset`` in shard ``path`` (for messages)."""
    offsets, _, _, keys = scan_shard(path)
    return keys[offsets.index(offset)] if offset in offsets else f"at byte {offset}"


def read_sample_bytes(handle, offset: int, size: int) -> bytes:  # noqa: ANN001 (a binary file)
    """The ``size`` bytes at ``offset`` of an open shard file."""
    handle.seek(offset)
    return handle.read(size)


__all__ = ["ShardCatalog", "ShardSet", "catalog_shards", "find_shard_sets", "key_at",
           "read_sample_bytes", "scan_shard"]
