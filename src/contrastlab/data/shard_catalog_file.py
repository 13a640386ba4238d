"""A shard's catalog (where each sample's image lies, and its label) kept in a small file, so
that a stream starts without reading every tar header again.

Scanning the headers of a shard costs one seek and one read per member: about a minute for a
million samples, more on a cold disk. The result, three int64 numbers per sample, is saved as
``.npz``:

* beside the shard, ``000000.tar`` -> ``000000.tar.catalog.npz``, by ``contrastlab shards build``
  (the folder is contrastlab's own);
* for shards made by other tools, in the cache folder (:mod:`contrastlab.data.cache_dir`),
  under a name derived from the shard's absolute path, the first time they are scanned; the
  shard folder itself is never written to.

A catalog file is used only while the shard has the size and modification time recorded in it
and the tar header just before its last sample's image names an image of the recorded size; a
shard that was rewritten, copied without its times or replaced is scanned again. A catalog file
that cannot be read is ignored (and rewritten where allowed).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from contrastlab.data.cache_dir import cache_root
from contrastlab.data.shard_scan import scan_shard

#: Suffix of the catalog file written beside a shard.
CATALOG_SUFFIX = ".catalog.npz"
_VERSION = 1

Catalog = tuple[np.ndarray, np.ndarray, np.ndarray]


def beside(shard: Path) -> Path:
    """The catalog file beside ``shard``."""
    return shard.with_name(shard.name + CATALOG_SUFFIX)


def in_cache(shard: Path) -> Path | None:
    """The catalog file of ``shard`` in the cache folder (None when caching is off)."""
    root = cache_root()
    if root is None:
        return None
    digest = hashlib.sha256(str(shard.resolve()).encode()).hexdigest()[:32]
    return root / "shard-catalogs" / f"{digest}.npz"


def _stamp(stat: os.stat_result) -> np.ndarray:
    return np.asarray([_VERSION, stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def _header_matches(shard: Path, offset: int, size: int) -> bool:
    """True when the tar header block just before ``offset`` in ``shard`` describes a member
    of ``size`` bytes (the header of a sample's image precedes its bytes)."""
    if offset < tarfile.BLOCKSIZE:
        return False
    try:
        with open(shard, "rb") as handle:
            handle.seek(offset - tarfile.BLOCKSIZE)
            block = handle.read(tarfile.BLOCKSIZE)
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape").size == size
    except (OSError, tarfile.TarError, ValueError):
        return False


def read_catalog_file(path: Path, shard: Path, stat: os.stat_result) -> Catalog | None:
    """``(offsets, sizes, labels)`` from ``path`` when it exists and matches ``shard`` (its
    ``stat`` and its last sample's header); None otherwise (missing, stale or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not np.array_equal(data["stamp"], _stamp(stat)):
                return None
            offsets, sizes, labels = (np.asarray(data[name], dtype=np.int64)
                                      for name in ("offset", "size", "label"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if not (offsets.ndim == 1 and offsets.shape == sizes.shape == labels.shape):
        return None
    if not len(offsets) or offsets.min() < 0 or int((offsets + sizes).max()) > stat.st_size:
        return None
    if not _header_matches(shard, int(offsets[-1]), int(sizes[-1])):
        return None
    return offsets, sizes, labels


def write_catalog_file(path: Path, stat: os.stat_result, catalog: Catalog) -> bool:
    """Save ``catalog`` for a shard with ``stat`` to ``path`` (atomically); False when the
    folder cannot be written (the catalog is then simply not kept)."""
    offsets, sizes, labels = catalog
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, stamp=_stamp(stat), offset=offsets, size=sizes, label=labels)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True


def shard_catalog(shard: Path) -> Catalog:
    """``(offsets, sizes, labels)`` of the samples of ``shard``: from its catalog file when a
    valid one exists, else from a scan of its headers (then kept in the cache folder).

    Raises:
        DataError: from the scan (a shard that is not a tar file, truncated, without images).
    """
    stat = shard.stat()
    cached = in_cache(shard)
    for candidate in (beside(shard), cached):
        if candidate is not None and candidate.is_file():
            found = read_catalog_file(candidate, shard, stat)
            if found is not None:
                return found
    catalog = scan_catalog(shard)
    if cached is not None:
        write_catalog_file(cached, stat, catalog)
    return catalog


def scan_catalog(shard: Path) -> Catalog:
    """``(offsets, sizes, labels)`` of ``shard`` from a scan of its tar headers."""
    offsets, sizes, labels, _ = scan_shard(shard)
    return (np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.int64),
            np.asarray(labels, dtype=np.int64))


__all__ = ["CATALOG_SUFFIX", "beside", "in_cache", "read_catalog_file", "scan_catalog",
           "shard_catalog", "write_catalog_file"]
