"""The decoded-image cache: a second read maps the first one's images, and any change to the
files or the settings decodes again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data import decode, load_dataset
from contrastlab.data.cache_dir import CACHE_ENV
from contrastlab.data.dataset import DatasetSplits


def _folder(root: Path, per_class: int = 6, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def _same(first: DatasetSplits, second: DatasetSplits) -> None:
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert a is not None and b is not None
        assert torch.equal(a.images, b.images)
        assert a.labels is not None and b.labels is not None and torch.equal(a.labels, b.labels)
        assert a.ids == b.ids and a.classes == b.classes and a.name == b.name
    assert first.skipped == second.skipped and first.official_split == second.official_split


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images decoded (every reader goes through decode.decode_one)."""
    calls: list[int] = []
    original = decode.decode_one

    def counting(source, image_size=None):  # noqa: ANN001, ANN202
        calls.append(1)
        return original(source, image_size)

    monkeypatch.setattr(decode, "decode_one", counting)
    return calls


def test_a_second_read_comes_from_the_cache(tmp_path: Path, cache: Path,
                                            decodes: list[int]) -> None:
    data = _folder(tmp_path / "data")
    first = load_dataset(str(data), test_fraction=0.5)
    assert len(decodes) == 12
    second = load_dataset(str(data), test_fraction=0.5)
    assert len(decodes) == 12, "the second read decoded again"
    _same(first, second)
    assert len(list((cache / "decoded").iterdir())) == 1
    second.train.images[0] += 1  # writable, and private to this process
    _same(first, load_dataset(str(data), test_fraction=0.5))


def test_changes_to_files_or_settings_decode_again(tmp_path: Path, cache: Path,
                                                    decodes: list[int]) -> None:
    data = _folder(tmp_path / "data")
    load_dataset(str(data), test_fraction=0.5)
    load_dataset(str(data), test_fraction=0.5, image_size=4)
    load_dataset(str(data), test_fraction=0.5, split_seed=1)
    assert len(decodes) == 36
    image = data / "a" / "000.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    os.utime(image, ns=(1, 1))  # even with an old modification time: the change time moves
    changed = load_dataset(str(data), test_fraction=0.5)
    assert len(decodes) == 48
    images = torch.cat([changed.train.images, changed.test.images])
    assert int(images.flatten(1).sum(1).min()) == 0, "the edited image was not read again"
    (data / "b" / "005.png").unlink()
    fewer = load_dataset(str(data), test_fraction=0.5)
    assert len(fewer.train) + len(fewer.test) == 11


def test_cache_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  decodes: list[int]) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    data = _folder(tmp_path / "data")
    load_dataset(str(data), test_fraction=0.5)
    load_dataset(str(data), test_fraction=0.5)
    assert len(decodes) == 24


def test_a_damaged_entry_is_decoded_again(tmp_path: Path, cache: Path,
                                          decodes: list[int]) -> None:
    data = _folder(tmp_path / "data")
    first = load_dataset(str(data), test_fraction=0.5)
    (entry,) = (cache / "decoded").iterdir()
    (entry / "train-images.npy").write_bytes(b"garbage")
    _same(first, load_dataset(str(data), test_fraction=0.5))
    assert len(decodes) == 24


def test_errors_are_not_cached(tmp_path: Path, cache: Path) -> None:
    data = _folder(tmp_path / "data")
    (data / "a" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="bad.png"):
        load_dataset(str(data), test_fraction=0.5)
    skipped = load_dataset(str(data), test_fraction=0.5, skip_bad_files=True)
    again = load_dataset(str(data), test_fraction=0.5, skip_bad_files=True)
    assert len(skipped.skipped) == 1 and again.skipped == skipped.skipped
    with pytest.raises(Exception, match="bad.png"):
        load_dataset(str(data), test_fraction=0.5)


def test_a_sized_read_finds_an_unsized_entry_of_that_size(tmp_path: Path, cache: Path,
                                                          decodes: list[int]) -> None:
    data = _folder(tmp_path / "data")  # 8x8 images
    first = load_dataset(str(data), test_fraction=0.5)
    _same(first, load_dataset(str(data), test_fraction=0.5, image_size=8))
    assert len(decodes) == 12
    load_dataset(str(data), test_fraction=0.5, image_size=4)  # another size: decoded
    assert len(decodes) == 24
