"""Tests of the CIFAR python-batch reader and its restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contrastlab.data import load_dataset
from contrastlab.data.cifar import safe_load
from contrastlab.errors import DataError


def _dump(path: Path, obj: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _batch(n: int, seed: int, label_key: bytes, classes: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, size=n)],
        b"filenames": [f"{i}.png".encode() for i in range(n)],
    }


def _cifar10(folder: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    folder.mkdir(parents=True)
    names = [f"class{i}".encode() for i in range(10)]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072}, protocol)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _batch(4, i, b"labels", 10), protocol)
    _dump(folder / "test_batch", _batch(3, 99, b"labels", 10), protocol)
    return folder


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches(tmp_path: Path, protocol: int) -> None:
    folder = _cifar10(tmp_path / "cifar-10-batches-py", protocol)
    splits = load_dataset(str(folder))
    assert splits.official_split and splits.test is not None
    assert tuple(splits.train.images.shape) == (20, 3, 32, 32)
    assert tuple(splits.test.images.shape) == (3, 3, 32, 32)
    assert splits.train.classes == [f"class{i}" for i in range(10)]
    first = _batch(4, 1, b"labels", 10)
    np.testing.assert_array_equal(
        splits.train.images[0].numpy(), first[b"data"][0].reshape(3, 32, 32)
    )
    assert splits.train.labels[:4].tolist() == first[b"labels"]
    assert splits.train.ids[0] == f"{folder / 'data_batch_1'}:0"
    # The folder that holds the official sub-folder is accepted too.
    assert len(load_dataset(str(tmp_path)).train) == 20


def test_python2_style_numpy_names_are_accepted(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path / "c", protocol=2)
    batch = folder / "data_batch_1"
    data = batch.read_bytes()
    if b"numpy._core.multiarray" in data:
        batch.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    record = safe_load(batch)
    assert record[b"data"].shape == (4, 3072)


def test_cifar100_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine{i}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    train = _batch(6, 1, b"fine_labels", 100)
    train[b"coarse_labels"] = [0] * 6
    _dump(folder / "train", train)
    _dump(folder / "test", _batch(2, 2, b"fine_labels", 100))
    splits = load_dataset(str(folder))
    assert splits.test is not None
    assert len(splits.train.classes or []) == 100
    assert splits.train.labels.tolist() == train[b"fine_labels"]
    assert len(splits.test) == 2


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
def test_malicious_pickle_is_refused(tmp_path: Path, exploit: type) -> None:
    folder = _cifar10(tmp_path / "cifar")
    marker = tmp_path / "pwned"
    batch = _batch(4, 1, b"labels", 10)
    batch[b"labels"] = exploit(marker)
    _dump(folder / "data_batch_3", batch)
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    assert "data_batch_3" in str(info.value) and "refusing" in str(info.value)
    assert not marker.exists()


def test_malicious_meta_is_refused(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path / "cifar")
    marker = tmp_path / "pwned"
    _dump(folder / "batches.meta", {b"label_names": _Exploit(marker)})
    with pytest.raises(DataError, match="batches.meta"):
        load_dataset(str(folder))
    assert not marker.exists()


def test_damaged_batches(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path / "cifar")
    (folder / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset(str(folder))
    bad_rows = _batch(4, 1, b"labels", 10)
    bad_rows[b"data"] = np.zeros((4, 100), dtype=np.uint8)
    _dump(folder / "data_batch_2", bad_rows)
    with pytest.raises(DataError, match="3072"):
        load_dataset(str(folder))
    bad_labels = _batch(4, 1, b"labels", 10)
    bad_labels[b"labels"] = [0, 1, 2, 10]
    _dump(folder / "data_batch_2", bad_labels)
    with pytest.raises(DataError, match="label 10"):
        load_dataset(str(folder))


def test_missing_batch(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path / "cifar")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(str(folder))
