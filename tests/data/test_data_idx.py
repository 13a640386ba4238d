"""Tests of the MNIST-style IDX reader, including the real MNIST test set when present."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from contrastlab.data import load_dataset
from contrastlab.data.idx import read_idx
from contrastlab.data.loader import FASHION_MNIST_DIR
from contrastlab.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _pair(folder: Path, prefix: str, n: int, seed: int, gz: bool = True, dotted: bool = False):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    _write(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", images, gz)
    _write(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", labels, gz)
    return images, labels


@pytest.mark.parametrize(("gz", "dotted"), [(True, False), (False, False), (False, True)])
def test_official_split(tmp_path: Path, gz: bool, dotted: bool) -> None:
    train_images, train_labels = _pair(tmp_path, "train", 30, 1, gz, dotted)
    _pair(tmp_path, "t10k", 20, 2, gz, dotted)
    splits = load_dataset(str(tmp_path))
    assert splits.official_split and splits.test is not None
    assert tuple(splits.train.images.shape) == (30, 1, 28, 28)
    assert tuple(splits.test.images.shape) == (20, 1, 28, 28)
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), train_images)
    assert splits.train.labels.tolist() == train_labels.tolist()
    assert splits.train.classes == [str(i) for i in range(10)]
    assert splits.train.ids[0].endswith("idx3-ubyte" + (".gz" if gz else "") + ":0")


def test_single_pair_is_split(tmp_path: Path) -> None:
    _pair(tmp_path, "t10k", 50, 3)
    splits = load_dataset(str(tmp_path), test_fraction=0.2, split_seed=5)
    assert not splits.official_split and splits.test is not None
    assert len(splits.train) == 40 and len(splits.test) == 10
    assert sorted(splits.test.labels.tolist()) == list(range(10))


def test_fashion_folder_gets_fashion_names(tmp_path: Path) -> None:
    folder = tmp_path / "Fashion-MNIST"
    folder.mkdir()
    _pair(folder, "train", 50, 1)
    splits = load_dataset(str(folder))
    assert splits.train.classes is not None
    assert splits.train.classes[0] == "T-shirt/top" and splits.train.classes[9] == "Ankle boot"


def test_missing_partner(tmp_path: Path) -> None:
    _pair(tmp_path, "train", 10, 1)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset(str(tmp_path))


def test_wrong_magic(tmp_path: Path) -> None:
    _pair(tmp_path, "t10k", 10, 1, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*magic"):
        load_dataset(str(tmp_path))


def test_truncated_file(tmp_path: Path) -> None:
    _pair(tmp_path, "t10k", 10, 1, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated"):
        load_dataset(str(tmp_path))


def test_truncated_gzip(tmp_path: Path) -> None:
    _pair(tmp_path, "t10k", 10, 1)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset(str(tmp_path))


def test_other_value_type_and_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + np.asarray([1], ">u4").tobytes() + b"\0\0\0\0")
    with pytest.raises(DataError, match="0x0d"):
        read_idx(path)
    _pair(tmp_path, "train", 10, 1)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(9) % 10, True)
    with pytest.raises(DataError, match="10 images.*9"):
        load_dataset(str(tmp_path))


def test_fashion_mnist_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contrastlab.data.loader as loader

    monkeypatch.setattr(loader, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    installed = tmp_path / "fashion-mnist"
    installed.mkdir()
    _pair(installed, "train", 20, 1)
    _pair(installed, "t10k", 10, 2)
    monkeypatch.setattr(loader, "FASHION_MNIST_DIR", installed)
    splits = load_dataset("fashion-mnist")
    assert splits.official_split and splits.train.classes is not None
    assert splits.train.classes[1] == "Trouser"


def test_real_fashion_mnist_when_installed() -> None:
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"dataset-fashion-mnist not installed at {FASHION_MNIST_DIR}")
    splits = load_dataset("fashion-mnist")
    assert splits.test is not None and splits.train.images.shape[1:] == (1, 28, 28)


def test_real_mnist_test_set() -> None:
    folder = SHARED_DATA / "mnist-test"
    if not folder.is_dir():
        pytest.skip(f"MNIST test set not found at {folder}")
    splits = load_dataset(str(folder), test_fraction=0.2, split_seed=0)
    assert splits.test is not None and not splits.official_split
    assert len(splits.train) == 8000 and len(splits.test) == 2000
    assert splits.train.num_classes == 10
    assert tuple(splits.train.images.shape) == (8000, 1, 28, 28)
    assert set(splits.test.labels.tolist()) == set(range(10))
    counts = np.bincount(splits.test.labels.numpy(), minlength=10)
    assert counts.min() >= 170 and counts.max() <= 230
