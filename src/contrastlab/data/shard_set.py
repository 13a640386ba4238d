"""Finding a shard set from a ``--data`` spec and cataloguing its samples from the tar headers.

A spec names shards when it is

* a brace pattern, ``data/shards/{000000..000099}.tar`` (every named shard must exist);
* a folder holding ``shards.json`` or only ``.tar`` files (no sub-folders, no images);
* a folder with a ``train/`` shard folder, and optionally ``test/`` (or ``val/``) beside it: the
  official split, as for image folders.

:func:`catalog_shards` reads the tar headers only (the images are not read): where each sample's
image lies in its shard (offset and size) and its label. A sample's image is then read with one
seek and one read (:func:`read_sample_bytes`), which is what lets a stream skip samples without
reading or decoding them. :func:`scan_shard_samples` also records each sample's ``.txt``
member (its caption, for image-caption pairs: :mod:`contrastlab.data.captions`).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.data.decode import is_image_name
from contrastlab.data.shard_format import (
    IMAGE_SUFFIXES,
    INDEX_NAME,
    ShardIndex,
    expand_braces,
    is_brace_pattern,
    read_index,
    split_member_name,
)
from contrastlab.errors import DataError
from contrastlab.phases import phase

_TEST_NAMES = ("test", "val")
_MAX_LABEL_BYTES = 64


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
    """

    shards: list[Path]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    counts: np.ndarray

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

    def starts(self) -> np.ndarray:
        """The first sample of each shard (samples are stored shard after shard)."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


def _parse_label(data: bytes, shard: Path, key: str) -> int:
    try:
        value = int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        value = -1
    if value < 0:
        raise DataError(f"sample {key!r} of shard {shard} has a .cls member {data[:20]!r} that is "
                        "not a class index (a whole number >= 0); fix or rebuild the shard")
    return value


@dataclass
class ShardSample:
    """The members of one sample of a shard (-1: not seen): where its image and its caption
    (``.txt`` member) lie, and its label."""

    key: str
    offset: int = -1
    size: int = 0
    label: int = -1
    text_offset: int = -1
    text_size: int = 0


def scan_shard(path: Path) -> tuple[list[int], list[int], list[int], list[str]]:
    """``(offsets, sizes, labels, keys)`` of the samples of one shard, from its headers
    (:func:`scan_shard_samples` without the captions)."""
    samples = scan_shard_samples(path)
    return ([s.offset for s in samples], [s.size for s in samples], [s.label for s in samples],
            [s.key for s in samples])


def scan_shard_samples(path: Path) -> list[ShardSample]:
    """The samples of one shard, from its headers.

    A sample is a run of consecutive members sharing a key; its first image member is its
    image, its ``cls`` member its label (-1 without one) and its ``txt`` member its caption
    (offset -1 without one). Keys without an image are ignored.

    Raises:
        DataError: a shard that is not a tar file, is truncated, or holds no image.
    """
    samples: list[ShardSample] = []
    file_size = path.stat().st_size
    members = 0
    group = ShardSample("")

    def flush() -> None:
        if group.offset >= 0:
            samples.append(group)

    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                members += 1
                if member.offset_data + member.size > file_size:
                    raise DataError(
                        f"shard {path} is truncated: member {member.name!r} needs bytes up to "
                        f"{member.offset_data + member.size} but the file has {file_size}; "
                        "copy the shard again or rebuild it")
                parts = split_member_name(member.name) if member.isreg() else None
                if parts is None:
                    continue
                key, extension = parts
                if group.key != key:
                    flush()
                    group = ShardSample(key)
                if extension in IMAGE_SUFFIXES and group.offset < 0:
                    group.offset, group.size = member.offset_data, member.size
                elif extension == "txt" and group.text_offset < 0:
                    group.text_offset, group.text_size = member.offset_data, member.size
                elif extension == "cls" and group.label < 0:
                    handle = tar.extractfile(member)
                    data = b"" if handle is None else handle.read(_MAX_LABEL_BYTES)
                    group.label = _parse_label(data, path, key)
            flush()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot read shard {path}: {exc.__class__.__name__}: {exc}. It is not "
                        "a complete uncompressed tar file; copy it again or rebuild it") from exc
    if not samples:
        raise DataError(f"shard {path} holds no images ({members} member(s)); a shard needs "
                        f"members named KEY.EXT with EXT one of {', '.join(sorted(IMAGE_SUFFIXES))}"
                        "; remove it or rebuild the shards")
    return samples


def catalog_shards(shards: ShardSet) -> ShardCatalog:
    """Scan the headers of every shard of ``shards`` (with progress) into a catalog."""
    parts: list[tuple[list[int], list[int], list[int]]] = []
    with phase(f"reading the tar headers of {len(shards.paths)} shard(s) of {shards.name}",
               total=len(shards.paths)) as progress:
        for path in shards.paths:
            offsets, sizes, labels, _ = scan_shard(path)
            parts.append((offsets, sizes, labels))
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
        offset=np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]),
        size=np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts]),
        label=np.concatenate([np.asarray(p[2], dtype=np.int64) for p in parts]),
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


__all__ = ["ShardCatalog", "ShardSample", "ShardSet", "catalog_shards", "find_shard_sets",
           "key_at", "read_sample_bytes", "scan_shard", "scan_shard_samples"]
