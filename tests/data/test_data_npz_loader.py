"""Tests of the .npz reader, the digits reader and the spec dispatch of ``load_dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contrastlab.data import DatasetSplits, ImageDataset, describe_accepted, load_dataset
from contrastlab.errors import DataError


def test_npz_labelled(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    x = np.random.default_rng(0).integers(0, 256, size=(20, 5, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(path, x=x, y=y)
    splits = load_dataset(str(path))
    assert isinstance(splits, DatasetSplits) and isinstance(splits.train, ImageDataset)
    assert splits.test is not None and not splits.official_split
    assert tuple(splits.train.images.shape) == (16, 3, 5, 6)
    assert splits.train.classes == ["0", "1"]
    first = int(splits.train.ids[0].split(":")[1])
    np.testing.assert_array_equal(splits.train.images[0].numpy(), x[first].transpose(2, 0, 1))
    assert splits.train.ids[0].startswith("toy:")


def test_npz_unlabeled_grey(tmp_path: Path) -> None:
    path = tmp_path / "grey.npz"
    np.savez(path, x=np.zeros((7, 4, 4), dtype=np.uint8))
    splits = load_dataset(str(path))
    assert splits.test is None and tuple(splits.train.images.shape) == (7, 1, 4, 4)


def test_npz_official_split_and_class_names(tmp_path: Path) -> None:
    path = tmp_path / "split.npz"
    np.savez(
        path,
        x_train=np.zeros((6, 4, 4, 1), dtype=np.uint8),
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_test=np.ones((3, 4, 4, 1), dtype=np.uint8),
        y_test=np.array([2, 1, 0], dtype=np.uint8),
        classes=np.array(["ant", "bee", "cow"]),
    )
    splits = load_dataset(str(path))
    assert splits.official_split and splits.test is not None
    assert splits.train.classes == ["ant", "bee", "cow"]
    assert splits.test.labels.tolist() == [2, 1, 0]
    assert tuple(splits.test.images.shape) == (3, 1, 4, 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"x": np.zeros((3, 4, 4), dtype=np.float32)}, "'x' has dtype float32"),
        ({"x": np.zeros((3, 4, 4, 2), dtype=np.uint8)}, "'x' has shape"),
        ({"x": np.zeros((3, 4), dtype=np.uint8)}, "'x' has shape"),
        ({"x": np.zeros((3, 4, 4), dtype=np.uint8), "y": np.zeros(2, int)}, "'y' has shape"),
        ({"x": np.zeros((3, 4, 4), dtype=np.uint8), "y": np.zeros(3)}, "'y' has dtype"),
        ({"x": np.zeros((3, 4, 4), dtype=np.uint8), "y": -np.ones(3, int)}, "negative"),
        ({"images": np.zeros((3, 4, 4), dtype=np.uint8)}, "no field 'x'"),
        (
            {"x_train": np.zeros((3, 4, 4), np.uint8), "x_test": np.zeros((3, 4, 4), np.uint8)},
            "'y_train'",
        ),
        (
            {
                "x_train": np.zeros((3, 4, 4), np.uint8),
                "y_train": np.zeros(3, int),
                "x_test": np.zeros((3, 4, 4), np.int16),
                "y_test": np.zeros(3, int),
            },
            "'x_test' has dtype int16",
        ),
    ],
)
def test_npz_errors_name_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **fields)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert "bad.npz" in str(info.value)
    assert message in str(info.value)


def test_npz_object_array_and_garbage_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([object(), object()], dtype=object))
    with pytest.raises(DataError, match="objects.npz"):
        load_dataset(str(path))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK not really a zip")
    with pytest.raises(DataError, match="garbage.npz"):
        load_dataset(str(garbage))


def test_digits() -> None:
    splits = load_dataset("digits")
    assert splits.test is not None and not splits.official_split
    assert len(splits.train) + len(splits.test) == 1797
    assert len(splits.test) == 360
    assert tuple(splits.train.images.shape[1:]) == (1, 8, 8)
    assert splits.train.classes == [str(i) for i in range(10)]
    assert int(splits.train.images.max()) == 255
    values = set(np.unique(splits.train.images.numpy()).tolist())
    assert values <= {round(v * 255 / 16) for v in range(17)}
    assert splits.train.ids[0].startswith("digits:")
    again = load_dataset("DIGITS")
    assert again.test is not None and again.test.ids == splits.test.ids


@pytest.mark.parametrize("spec", ["no-such-dataset", "/definitely/missing/path", ""])
def test_unknown_spec_lists_what_is_accepted(spec: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(spec)
    assert "Accepted datasets" in str(info.value)


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,3")
    with pytest.raises(DataError, match="data.csv"):
        load_dataset(str(path))


def test_bad_test_fraction() -> None:
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.0)


def test_describe_accepted_mentions_every_kind() -> None:
    text = describe_accepted()
    for word in ("digits", "fashion-mnist", "folder", ".tar.gz", "CIFAR", "IDX", ".npz"):
        assert word in text
    assert "\n" not in text


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        load_dataset("nope")


def test_image_size_applies_to_array_sources(tmp_path: Path) -> None:
    digits = load_dataset("digits", image_size=16)
    assert digits.test is not None
    assert tuple(digits.train.images.shape[1:]) == (1, 16, 16)
    assert tuple(digits.test.images.shape[1:]) == (1, 16, 16)
    path = tmp_path / "wide.npz"
    np.savez(path, x=np.full((4, 6, 10, 3), 77, dtype=np.uint8))
    splits = load_dataset(str(path), image_size=5)
    assert tuple(splits.train.images.shape) == (4, 3, 5, 5)
    assert int(splits.train.images.min()) == 77 == int(splits.train.images.max())
