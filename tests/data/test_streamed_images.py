"""Shard sets streamed in one pass for features (data/streamed_images.py): the same images,
labels, ids and split as the shards decoded into memory, the last batch partial, undecodable
samples named or left out."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlab.data import load_dataset
from contrastlab.data.loader import shard_sets_of
from contrastlab.data.shard_build import build_shards
from contrastlab.data.shard_memory import decode_catalog
from contrastlab.data.shard_set import catalog_shards
from contrastlab.data.streamed_images import StreamedImages, open_streamed_splits
from contrastlab.errors import DataError


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 1,797 digits (8x8 grey, labelled) as shards of about 150 images."""
    out = tmp_path_factory.mktemp("digit-shards")
    build_shards("digits", out, shard_bytes=150 * 1024, max_side=None)
    return out


def _streamed(spec: str | Path, **options) -> object:  # noqa: ANN003
    sets = shard_sets_of(str(spec))
    assert sets is not None
    settings = {"test_fraction": 0.2, "split_seed": 0, "image_size": None,
                "skip_bad_files": False, "workers": 0, **options}
    return open_streamed_splits(*sets, **settings)


def _all_images(images: StreamedImages, batch_size: int, workers: int) -> torch.Tensor:
    batches = list(images.batches(batch_size, workers))
    assert all(len(batch) == batch_size for batch in batches[:-1])
    return torch.cat(batches)


@pytest.mark.parametrize("workers", [0, 2])
def test_one_pass_gives_the_in_memory_images_labels_ids_and_split(digit_shards: Path,
                                                                  workers: int) -> None:
    streamed = _streamed(digit_shards)
    memory = load_dataset(str(digit_shards), test_fraction=0.2, split_seed=0)
    assert not streamed.official_split and not memory.official_split
    for ours, theirs in ((streamed.train, memory.train), (streamed.test, memory.test)):
        assert len(ours) == len(theirs) and ours.classes == theirs.classes
        # 100 does not divide either split: the last, partial batch is kept
        assert len(ours) % 100
        assert torch.equal(_all_images(ours, 100, workers), theirs.images)
        assert torch.equal(ours.labels, theirs.labels)
        assert ours.ids == theirs.ids
    assert (streamed.train.image_size, streamed.train.channels) == (8, 1)


def test_working_size_official_split_and_subset(tmp_path: Path, digit_shards: Path) -> None:
    # an official split: train/ and test/ shard folders
    for side, shards in (("train", slice(0, 2)), ("test", slice(2, 3))):
        (tmp_path / side).mkdir()
        for shard in sorted(digit_shards.glob("*.tar"))[shards]:
            (tmp_path / side / shard.name).write_bytes(shard.read_bytes())
    streamed = _streamed(tmp_path, image_size=12)
    memory = load_dataset(str(tmp_path), image_size=12)
    assert streamed.official_split and memory.official_split
    assert torch.equal(_all_images(streamed.test, 64, 0), memory.test.images)
    assert memory.test.images.shape[2:] == (12, 12)
    part = streamed.train.subset([5, 0, 7])
    assert torch.equal(_all_images(part, 2, 0), memory.train.images[[5, 0, 7]])
    assert part.ids == [memory.train.ids[i] for i in (5, 0, 7)]


def _whole(folder: Path, skip_bad_files: bool) -> StreamedImages:
    """Every sample of the shards in ``folder``, unsplit, decoded in this process."""
    train = _streamed(folder, skip_bad_files=skip_bad_files).train
    return StreamedImages(train.catalog, np.arange(len(train.catalog)), train.image_size,
                          train.channels, train.classes, train.name, skip_bad_files, 0)


def test_a_corrupt_sample_is_named_or_left_out(tmp_path: Path, digit_shards: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in sorted(digit_shards.glob("*.tar"))[:2]:
        (folder / shard.name).write_bytes(shard.read_bytes())
    shard = sorted(folder.glob("*.tar"))[1]
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".png")][3]
    raw = bytearray(shard.read_bytes())
    raw[member.offset_data:member.offset_data + 16] = b"not an image...."
    shard.write_bytes(bytes(raw))
    key = member.name.split(".")[0]
    with pytest.raises(DataError, match=rf"cannot decode sample .*{shard.name}::{key}"):
        list(_whole(folder, skip_bad_files=False).batches(32))
    whole = _whole(folder, skip_bad_files=True)
    total = len(whole)
    images = torch.cat(list(whole.batches(32)))  # the batch with the bad sample is one short
    assert len(images) == total - 1 == len(whole) == len(whole.ids) == len(whole.labels)
    assert not any(name.endswith(f"::{key}") for name in whole.ids)
    assert len(whole.skipped) == 1 and key in whole.skipped[0]
    sets = shard_sets_of(str(folder))
    memory, skipped = decode_catalog(catalog_shards(sets[0]), sets[0], image_size=None,
                                     skip_bad_files=True)
    assert len(skipped) == 1 and whole.ids == memory.ids  # the same sample left out
    assert torch.equal(images, memory.images) and torch.equal(whole.labels, memory.labels)
