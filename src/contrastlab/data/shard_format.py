"""The WebDataset shard layout: member names, brace patterns and the shard set's index file.

A shard is an uncompressed tar file. Its members are grouped into samples by *key*: the member's
path up to the first '.' of its file name (``a/b/000123.jpg`` and ``a/b/000123.cls`` are the
sample ``a/b/000123``, extensions ``jpg`` and ``cls``); the members of one sample are consecutive.
A sample contributes its first image member (``jpg``, ``jpeg``, ``png``, ``webp``, and the other
extensions the folder reader accepts), an optional ``cls`` member (the class index as decimal
text) and any other members (``txt``, ``json``), which are ignored. This is the layout of the
``webdataset`` package, so shards written by it or by ``tar`` from such files are read as they are.

A shard set written by ``contrastlab shards build`` has an index file, ``shards.json``, beside
its shards: the class names and each shard's sample count, so that readers know the sizes
without scanning. Shards without one are read too (the counts then come from a scan of the tar
headers).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from contrastlab.errors import DataError

#: Extensions (without the dot, lower case) of a sample's image member.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"}
)
#: The index file of a shard set.
INDEX_NAME = "shards.json"
#: The ``format`` value of the index files this version writes and reads.
INDEX_FORMAT = "contrastlab-shards/1"

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def split_member_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member name, or None when it has no extension.

    The extension is everything after the first '.' of the file name, in lower case.
    """
    path = PurePosixPath(name)
    stem, dot, extension = path.name.partition(".")
    if not dot or not stem:
        return None
    parent = str(path.parent)
    key = stem if parent in ("", ".") else f"{parent}/{stem}"
    return key, extension.lower()


def expand_braces(pattern: str) -> list[str]:
    """Expand every ``{A..B}`` of ``pattern`` (inclusive, zero-padded to A's width).

    ``"data/{000000..000002}.tar"`` gives ``data/000000.tar``, ``data/000001.tar`` and
    ``data/000002.tar``; several ranges expand to their product, in order.

    Raises:
        DataError: a range whose end is before its start.
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    start, end = int(first), int(last)
    if end < start:
        raise DataError(f"the shard pattern {pattern!r} has the range {match.group(0)} whose end "
                        f"is before its start; write it as {{{last}..{first}}}")
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [name for number in range(start, end + 1)
            for name in expand_braces(f"{head}{number:0{len(first)}d}{tail}")]


def is_brace_pattern(spec: str) -> bool:
    """True when ``spec`` holds a ``{A..B}`` range."""
    return _BRACE.search(spec) is not None


@dataclass
class ShardIndex:
    """What ``shards.json`` says about a shard set.

    Attributes:
        classes: class names indexed by label, or None (unlabelled, or names unknown).
        counts: shard file name -> number of samples with an image.
        max_side: the limit on the shorter side the images were stored with, if one.
    """

    classes: list[str] | None
    counts: dict[str, int]
    max_side: int | None = None

    def to_json(self) -> str:
        shards = [{"name": name, "samples": count} for name, count in self.counts.items()]
        data = {"format": INDEX_FORMAT, "classes": self.classes,
                "samples": sum(self.counts.values()), "max_side": self.max_side,
                "shards": shards}
        return json.dumps(data, indent=1) + "\n"


def read_index(folder: Path) -> ShardIndex | None:
    """The index file of the shard folder ``folder``; None when there is none.

    Raises:
        DataError: an index file that is not valid (naming the file and what is wrong).
    """
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {INDEX_FORMAT!r}")
        counts = {str(entry["name"]): int(entry["samples"]) for entry in data["shards"]}
        classes = data.get("classes")
        if classes is not None:
            classes = [str(name) for name in classes]
        size = data.get("max_side")
        return ShardIndex(classes=classes, counts=counts,
                          max_side=None if size is None else int(size))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the shard index {path}: {exc}. Delete it (the shards are "
                        "then scanned) or rebuild the shards with 'contrastlab shards build'"
                        ) from exc


__all__ = ["IMAGE_SUFFIXES", "INDEX_FORMAT", "INDEX_NAME", "ShardIndex", "expand_braces",
           "is_brace_pattern", "read_index", "split_member_name"]
