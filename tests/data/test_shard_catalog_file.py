"""Catalog files: a stream starts from them without scanning, and never trusts a stale one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from contrastlab.data import shard_catalog_file
from contrastlab.data.cache_dir import CACHE_ENV, cache_root
from contrastlab.data.shard_catalog_file import (
    CATALOG_SUFFIX,
    beside,
    in_cache,
    scan_catalog,
    shard_catalog,
)
from contrastlab.data.shard_set import catalog_shards, find_shard_sets
from contrastlab.data.shard_writer import ShardSample, write_shards


def _samples(count: int, size: int = 300) -> list[ShardSample]:
    return [ShardSample(key=f"{i:05d}", image=bytes([i % 251]) * (size + i), extension="jpg",
                        label=i % 3) for i in range(count)]


def _one_shard(folder: Path, count: int = 7) -> Path:
    write_shards(iter(_samples(count)), folder, shard_bytes=10**9)
    return folder / "000000.tar"


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> None:
        raise AssertionError(f"{path} was scanned although its catalog file is valid")
    monkeypatch.setattr(shard_catalog_file, "scan_catalog", fail)


def test_the_writer_leaves_a_catalog_equal_to_a_scan(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_shards(iter(_samples(20)), tmp_path, shard_bytes=4000)
    shards = sorted(tmp_path.glob("*.tar"))
    assert len(shards) > 1
    for shard in shards:
        assert beside(shard).is_file()
    scans = [scan_catalog(shard) for shard in shards]
    _no_scan(monkeypatch)
    for shard, scan in zip(shards, scans, strict=True):
        for read, expected in zip(shard_catalog(shard), scan, strict=True):
            np.testing.assert_array_equal(read, expected)
    train, _ = find_shard_sets(str(tmp_path))
    catalog = catalog_shards(train)
    assert len(catalog) == 20 and catalog.label.tolist() == [i % 3 for i in range(20)]


def test_a_rewritten_shard_is_scanned_again(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path / "a", count=7)
    sidecar = beside(shard).read_bytes()
    other = _one_shard(tmp_path / "b", count=5)
    os.replace(other, shard)  # another shard under the same name, the old catalog file kept
    beside(shard).write_bytes(sidecar)
    offsets, _, _ = shard_catalog(shard)
    assert len(offsets) == 5


def test_same_size_and_time_but_other_content_is_caught(tmp_path: Path) -> None:
    shard = _one_shard(tmp_path, count=6)
    stat = shard.stat()
    offsets, sizes, labels = scan_catalog(shard)
    # a forged catalog whose last sample does not sit behind a header of its size
    forged = (offsets, sizes + 1, labels)
    shard_catalog_file.write_catalog_file(beside(shard), stat, forged)
    np.testing.assert_array_equal(shard_catalog(shard)[1], sizes)


def test_foreign_shards_are_catalogued_into_the_cache_only(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    shard = _one_shard(tmp_path / "shards", count=4)
    beside(shard).unlink()  # as if made by another tool
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = shard_catalog(shard)
    cached = in_cache(shard)
    assert cached is not None and cached.is_file()
    assert not list((tmp_path / "shards").glob(f"*{CATALOG_SUFFIX}"))
    _no_scan(monkeypatch)
    for read, expected in zip(shard_catalog(shard), first, strict=True):
        np.testing.assert_array_equal(read, expected)


def test_cache_off_and_a_damaged_catalog_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_root() is None
    shard = _one_shard(tmp_path, count=3)
    beside(shard).write_bytes(b"not a zip file")
    assert len(shard_catalog(shard)[0]) == 3
    assert in_cache(shard) is None
