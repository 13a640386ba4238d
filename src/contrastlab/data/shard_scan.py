"""Scanning a WebDataset-layout tar shard's headers: where each sample's image lies and its label.

Only the tar headers and the small ``.cls`` members are read, never the images.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from contrastlab.data.shard_format import IMAGE_SUFFIXES, split_member_name
from contrastlab.errors import DataError

_MAX_LABEL_BYTES = 64


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
class ScannedSample:
    """The members of one sample of a shard (-1: not seen): where its image and its caption
    (``.txt`` member) lie, and its label."""

    key: str
    offset: int = -1
    size: int = 0
    label: int = -1
    text_offset: int = -1
    text_size: int = 0


def scan_shard(path: Path, limit: int | None = None
               ) -> tuple[list[int], list[int], list[int], list[str]]:
    """``(offsets, sizes, labels, keys)`` of the samples of one shard, from its headers (of
    its first ``limit`` samples only, when given): :func:`scan_shard_samples` without the
    captions."""
    samples = scan_shard_samples(path, limit)
    return ([s.offset for s in samples], [s.size for s in samples], [s.label for s in samples],
            [s.key for s in samples])


def scan_shard_samples(path: Path, limit: int | None = None) -> list[ScannedSample]:
    """The samples of one shard (its first ``limit`` ones, when given), from its headers.

    A sample is a run of consecutive members sharing a key; its first image member is its
    image, its ``cls`` member its label (-1 without one) and its ``txt`` member its caption
    (offset -1 without one). Keys without an image are ignored.

    Raises:
        DataError: a shard that is not a tar file, is truncated, or holds no image.
    """
    samples: list[ScannedSample] = []
    file_size = path.stat().st_size
    members = 0
    group = ScannedSample("")

    def flush() -> None:
        if group.offset >= 0:
            samples.append(group)

    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if limit is not None and len(samples) >= limit:
                    break
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
                    group = ScannedSample(key)
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
    # the sample being read when a limited scan stopped may be incomplete
    return samples if limit is None else samples[:limit]


__all__ = ["ScannedSample", "scan_shard", "scan_shard_samples"]
