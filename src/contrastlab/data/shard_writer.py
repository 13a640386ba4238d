"""Writing samples into WebDataset-layout tar shards, each shard atomically.

:func:`write_shards` pulls samples from an iterator and writes ``000000.tar``, ``000001.tar``, ...
into a folder, starting a new shard once the current one holds ``shard_bytes`` of members. Each
shard goes through :func:`contrastlab.atomic.write_atomic`: it is written to a temporary file and
renamed when complete, so an interrupted build never leaves a partial shard under a shard's
name. Members have fixed metadata (mtime 0, mode 0644, no owner), so the same samples always give
the same bytes. Only one sample is held in memory at a time. Each finished shard gets its
catalog file beside it (:mod:`contrastlab.data.shard_catalog_file`), so that a stream starts
without scanning the shard's headers.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.atomic import write_atomic
from contrastlab.data.shard_catalog_file import beside, write_catalog_file
from contrastlab.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str | int, what: str = "--shard-size") -> int:
    """Bytes in ``text``: a whole number, or a number with a unit (``1GB``, ``500MB``,
    ``64KiB``; decimal and binary units); ``what`` names the option in messages.

    Raises:
        ConfigError: text that is not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise ConfigError(f"{what} {text!r} is not a size; write e.g. 1GB, 500MB or "
                              "268435456 (bytes)")
        unit = (match.group(2) or "").lower().removesuffix("b")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ConfigError(f"{what} must be at least 1 byte, got {text!r}")
    return value


@dataclass
class ShardSample:
    """One sample to write: its key, its image's bytes and extension, and its label."""

    key: str
    image: bytes
    extension: str
    label: int | None = None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Add member ``name`` with ``data``; returns the bytes it takes in the tar file."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))
    return 512 + (len(data) + 511) // 512 * 512


class _Filler:
    """Fills shards from an iterator of samples, holding the next sample between shards."""

    def __init__(self, samples: Iterator[ShardSample], shard_bytes: int,
                 on_sample: Callable[[], None]) -> None:
        self.samples, self.shard_bytes, self.on_sample = samples, shard_bytes, on_sample
        self.next: ShardSample | None = next(samples, None)
        self.count = 0
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        self.labels: list[int] = []

    def write(self, tmp: Path) -> None:
        """Write samples into the tar file ``tmp`` until it is full or the samples end."""
        written, self.count = 0, 0
        self.offsets, self.sizes, self.labels = [], [], []
        with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            while self.next is not None and (self.count == 0 or written < self.shard_bytes):
                sample = self.next
                # a USTAR member is one 512-byte header block, then its data
                self.offsets.append(tar.offset + tarfile.BLOCKSIZE)
                self.sizes.append(len(sample.image))
                self.labels.append(-1 if sample.label is None else sample.label)
                written += _add(tar, f"{sample.key}.{sample.extension}", sample.image)
                if sample.label is not None:
                    written += _add(tar, f"{sample.key}.cls", f"{sample.label}".encode())
                self.count += 1
                self.on_sample()
                self.next = next(self.samples, None)


def write_shards(samples: Iterator[ShardSample], folder: Path, shard_bytes: int,
                 on_sample: Callable[[], None] = lambda: None) -> dict[str, int]:
    """Write every sample of ``samples`` into shards in ``folder``.

    Args:
        samples: the samples, in the order they are stored.
        folder: where the shards go (created if needed).
        shard_bytes: a shard is closed once its members take at least this many bytes.
        on_sample: called after each sample is written (progress).

    Returns:
        Shard file name -> number of samples in it, in order (each shard also gets its catalog
        file, ``NAME.tar.catalog.npz``).

    Raises:
        WriteError: a file-system failure (the shard being written is not left behind).
    """
    counts: dict[str, int] = {}
    filler = _Filler(iter(samples), shard_bytes, on_sample)
    while filler.next is not None:
        name = f"{len(counts):06d}.tar"
        write_atomic(folder / name, filler.write, "shard")
        catalog = tuple(np.asarray(values, dtype=np.int64)
                        for values in (filler.offsets, filler.sizes, filler.labels))
        write_catalog_file(beside(folder / name), (folder / name).stat(), catalog)
        counts[name] = filler.count
    return counts


__all__ = ["ShardSample", "parse_size", "write_shards"]
