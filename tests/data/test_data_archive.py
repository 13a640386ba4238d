"""Tests of reading image trees straight from tar archives."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastlab.data import load_dataset
from contrastlab.errors import DataError


def _png(value: int, size: tuple[int, int] = (4, 4), mode: str = "RGB") -> bytes:
    channels = 1 if mode == "L" else 3
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(buffer, "PNG")
    return buffer.getvalue()


def _make_tar(path: Path, members: dict[str, bytes | None], mode: str = "w:gz") -> Path:
    """Write ``members`` (name -> bytes, or None for a folder) into a tar archive."""
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _split_tree(wrapper: str = "") -> dict[str, bytes | None]:
    members: dict[str, bytes | None] = {}
    value = 0
    for side, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(count):
                members[f"{wrapper}{side}/{name}/{i:04d}.png"] = _png(value)
                value += 10
    return members


@pytest.mark.parametrize("wrapper", ["", "cifar-mini/", "./", "outer/inner/"])
def test_train_test_archive(tmp_path: Path, wrapper: str) -> None:
    archive = _make_tar(tmp_path / "mini.tar.gz", _split_tree(wrapper))
    splits = load_dataset(str(archive))
    assert splits.official_split
    assert splits.test is not None
    assert splits.train.classes == ["cat", "dog"]
    assert len(splits.train) == 6 and len(splits.test) == 4
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert tuple(splits.train.images.shape) == (6, 3, 4, 4)
    member = wrapper.removeprefix("./") + "train/cat/0000.png"
    assert splits.train.ids[0] == f"{archive}::{member}"
    assert int(splits.train.images[1, 0, 0, 0]) == 10


@pytest.mark.parametrize(("suffix", "mode"), [(".tar", "w"), (".tgz", "w:gz")])
def test_class_folder_archive_suffixes(tmp_path: Path, suffix: str, mode: str) -> None:
    members: dict[str, bytes | None] = {
        f"{name}/{i}.png": _png(i) for name in ("a", "b") for i in range(5)
    }
    members["a/.DS_Store"] = b"junk"
    members["__MACOSX/a/._0.png"] = b"junk"
    members["README.md"] = b"hello"
    archive = _make_tar(tmp_path / f"pack{suffix}", members, mode)
    splits = load_dataset(str(archive))
    assert not splits.official_split
    assert splits.test is not None
    assert len(splits.train) == 8 and len(splits.test) == 2
    assert splits.train.classes == ["a", "b"]


def test_flat_archive_is_unlabeled(tmp_path: Path) -> None:
    members: dict[str, bytes | None] = {f"images/{i}.png": _png(i, mode="L") for i in range(3)}
    archive = _make_tar(tmp_path / "flat.tar.gz", members)
    splits = load_dataset(str(archive))
    assert splits.test is None and splits.train.labels is None
    assert tuple(splits.train.images.shape) == (3, 1, 4, 4)


def test_bad_member_is_named_and_can_be_skipped(tmp_path: Path) -> None:
    members = _split_tree()
    members["train/cat/bad.png"] = b"definitely not a png"
    archive = _make_tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(DataError) as info:
        load_dataset(str(archive))
    assert "train/cat/bad.png" in str(info.value) and "--skip-bad-files" in str(info.value)
    splits = load_dataset(str(archive), skip_bad_files=True)
    assert len(splits.train) == 6
    assert splits.skipped and splits.skipped[0].startswith(f"{archive}::train/cat/bad.png")


def test_empty_class_folder_in_archive(tmp_path: Path) -> None:
    members = _split_tree()
    members["train/empty"] = None
    archive = _make_tar(tmp_path / "e.tar.gz", members)
    with pytest.raises(DataError, match="train/empty"):
        load_dataset(str(archive))


def test_mismatched_classes_in_archive(tmp_path: Path) -> None:
    members = _split_tree()
    members["test/zebra/0.png"] = _png(1)
    archive = _make_tar(tmp_path / "m.tar.gz", members)
    with pytest.raises(DataError) as info:
        load_dataset(str(archive))
    assert "zebra" in str(info.value) and "::train" in str(info.value)


def test_archive_without_images(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "none.tar.gz", {"docs/readme.txt": b"hi"})
    with pytest.raises(DataError, match="none.tar.gz"):
        load_dataset(str(archive))


@pytest.mark.parametrize("cut", [True, False])
def test_damaged_archive(tmp_path: Path, cut: bool) -> None:
    archive = _make_tar(tmp_path / "full.tar.gz", _split_tree())
    broken = tmp_path / "broken.tar.gz"
    data = archive.read_bytes()
    broken.write_bytes(data[: len(data) // 2] if cut else b"not a tar file at all" * 40)
    with pytest.raises(DataError, match="broken.tar.gz"):
        load_dataset(str(broken))


def test_different_sizes_in_archive_need_image_size(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    members: dict[str, bytes | None] = {
        "x/0.png": _png(0, size=(4, 4)),
        "x/1.png": _png(0, size=(6, 4)),
    }
    archive = _make_tar(tmp_path / "sizes.tar", members, "w")
    with pytest.raises(DataError, match="--image-size"):
        load_dataset(str(archive))
    splits = load_dataset(str(archive), image_size=3)
    assert tuple(splits.train.images.shape) == (2, 3, 3, 3)
