"""The streamed order (ranks, epochs, shuffle buffer) and the batches decoded in workers."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data.shard_set import ShardSet, catalog_shards
from contrastlab.data.shard_writer import ShardSample, write_shards
from contrastlab.data.stream import EpochStream, iterate_batches, to_channels
from contrastlab.data.stream_order import (
    buffer_shuffle,
    epoch_order,
    shards_of_rank,
    steps_per_epoch,
)
from contrastlab.errors import DataError


def test_ranks_read_disjoint_shards_that_cover_the_set() -> None:
    shares = [shards_of_rank(10, seed=4, rank=rank, world=3) for rank in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(10))
    assert [len(share) for share in shares] == [4, 3, 3]
    with pytest.raises(DataError, match="2 shard.* cannot be shared by 3 processes"):
        shards_of_rank(2, seed=0, rank=0, world=3)


def test_epoch_order_is_seeded_shuffled_and_complete() -> None:
    counts = np.asarray([5, 7, 6, 4])
    order = epoch_order(counts, seed=1, epoch=0, rank=0, world=1, buffer=8, length=22)
    assert sorted(order.tolist()) == list(range(22))  # one process: every sample once
    again = epoch_order(counts, seed=1, epoch=0, rank=0, world=1, buffer=8, length=22)
    assert np.array_equal(order, again)
    other = epoch_order(counts, seed=1, epoch=1, rank=0, world=1, buffer=8, length=22)
    assert not np.array_equal(order, other)
    halves = [epoch_order(counts, seed=1, epoch=0, rank=r, world=2, buffer=8, length=8)
              for r in range(2)]
    assert not set(halves[0].tolist()) & set(halves[1].tolist())
    # the smallest share (two shards) // batch: both ranks take the same number of steps
    smallest = min(counts[shards_of_rank(4, 1, r, 2)].sum() for r in range(2))
    assert steps_per_epoch(counts, seed=1, world=2, local_batch=4) == smallest // 4


def test_buffer_shuffle_is_a_bounded_permutation() -> None:
    stream = np.arange(1000)
    shuffled = buffer_shuffle(stream, 10, np.random.default_rng(0))
    assert sorted(shuffled.tolist()) == stream.tolist()
    # an item leaves at most `buffer` places before its place in the stream
    assert int(np.max(np.arange(1000) - np.argsort(shuffled))) <= 10
    assert np.array_equal(buffer_shuffle(stream, 0, np.random.default_rng(0)), stream)


def test_channels() -> None:
    grey = np.full((1, 2, 2), 9, dtype=np.uint8)
    assert to_channels(grey, 3).shape == (3, 2, 2) and to_channels(grey, 3)[2, 0, 0] == 9
    colour = np.stack([np.full((2, 2), v, dtype=np.uint8) for v in (255, 0, 0)])
    assert to_channels(colour, 1)[0, 0, 0] == 76  # ITU-R 601 luma of pure red


def _png(value: int, size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shards(tmp_path: Path) -> ShardSet:
    """40 samples in 8 shards; sample i is a flat image of value i, label i % 3."""
    samples = (ShardSample(f"{i:04d}", _png(i), "png", i % 3) for i in range(40))
    counts = write_shards(samples, tmp_path, shard_bytes=10 * 1024)  # 5 samples each
    assert len(counts) == 8
    return ShardSet("tiny", [tmp_path / name for name in counts])


def _batches(shards: ShardSet, workers: int, start: int, **options) -> list:  # noqa: ANN003
    catalog = catalog_shards(shards)
    order = epoch_order(catalog.counts, seed=2, epoch=1, rank=0, world=1, buffer=6, length=40)
    stream = EpochStream(catalog, order, local_batch=8, start=start, steps=5, image_size=4,
                         channels=options.pop("channels", 3),
                         skip_bad_files=options.pop("skip_bad_files", False))
    return list(iterate_batches(stream, workers))


def test_batches_do_not_depend_on_workers_and_resume_at_a_batch(shards: ShardSet) -> None:
    global_state = torch.get_rng_state()
    alone = _batches(shards, workers=0, start=0)
    assert torch.equal(torch.get_rng_state(), global_state)  # a resumed run's RNG is untouched
    assert len(alone) == 5 and alone[0][0].shape == (8, 3, 4, 4)
    values = torch.cat([images[:, 0, 0, 0] for images, _, _ in alone])
    assert sorted(values.tolist()) == list(range(40))  # each sample once
    labels = torch.cat([labels for _, labels, _ in alone])
    assert torch.equal(labels, values.long() % 3)
    two = _batches(shards, workers=2, start=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(alone, two, strict=True))
    resumed = _batches(shards, workers=2, start=3)
    assert len(resumed) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(alone[3:], resumed, strict=True))


def test_a_corrupt_sample_is_named_or_replaced(shards: ShardSet) -> None:
    shard = shards.paths[2]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
    raw = bytearray(shard.read_bytes())
    raw[member.offset_data:member.offset_data + 16] = b"not an image at all"[:16]
    shard.write_bytes(bytes(raw))
    key = member.name.split(".")[0]
    with pytest.raises(DataError, match=rf"cannot decode sample .*{shard.name}::{key}: .*"
                                        "--skip-bad-files"):
        _batches(shards, workers=0, start=0)
    kept = _batches(shards, workers=0, start=0, skip_bad_files=True)
    skipped = [name for _, _, names in kept for name in names]
    assert len(skipped) == 1 and f"{shard.name}::{key}" in skipped[0]
    assert all(images.shape == (8, 3, 4, 4) for images, _, _ in kept)  # batches keep their size
