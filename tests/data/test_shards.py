"""WebDataset-layout shards: names and patterns, `shards build` from folders and archives, reading
shards (ours and foreign ones) into memory, and the errors for bad shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.data import load_dataset
from contrastlab.data.dataset import ImageDataset
from contrastlab.data.shard_build import build_shards, prepare_image
from contrastlab.data.shard_format import expand_braces, split_member_name
from contrastlab.data.shard_set import catalog_shards, find_shard_sets
from contrastlab.data.shard_writer import parse_size
from contrastlab.errors import ConfigError, DataError


def test_member_names_and_brace_patterns() -> None:
    assert split_member_name("a/b/000123.jpg") == ("a/b/000123", "jpg")
    assert split_member_name("x.seg.PNG") == ("x", "seg.png")
    assert split_member_name("README") is None
    assert expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    assert expand_braces("{0..1}-{8..9}") == ["0-8", "0-9", "1-8", "1-9"]
    with pytest.raises(DataError, match=r"\{5\.\.3\} whose end is before its start"):
        expand_braces("s/{5..3}.tar")


def test_sizes() -> None:
    assert parse_size("1GB") == 10**9
    assert parse_size("64KiB") == 65536
    assert parse_size("0.5 MB") == 500_000
    assert parse_size(4096) == 4096
    with pytest.raises(ConfigError, match="--shard-size 'lots' is not a size"):
        parse_size("lots")


def _in_order(images: torch.Tensor, labels: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``images`` and ``labels`` sorted by (label, pixels): shards hold the samples shuffled."""
    keys = [(-1 if labels is None else int(labels[i]), images[i].numpy().tobytes())
            for i in range(len(images))]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return images[order], None if labels is None else labels[order]


def _same(a, b) -> None:  # noqa: ANN001 (two ImageDatasets)
    """The same images with the same labels, in any order."""
    images_a, labels_a = _in_order(a.images, a.labels)
    images_b, labels_b = _in_order(b.images, b.labels)
    assert torch.equal(images_a, images_b)
    assert (labels_a is None and labels_b is None) or torch.equal(labels_a, labels_b)
    assert a.classes == b.classes


def _whole(splits):  # noqa: ANN001, ANN202 (DatasetSplits -> ImageDataset)
    if splits.test is None:
        return splits.train
    return ImageDataset(images=torch.cat([splits.train.images, splits.test.images]),
                        labels=torch.cat([splits.train.labels, splits.test.labels]),
                        classes=splits.train.classes, ids=splits.train.ids + splits.test.ids)


def test_build_from_class_folders_round_trips(tmp_path: Path, class_tree) -> None:
    folder = class_tree(tmp_path / "pets", {"cat": 7, "dog": 5}, ext="png")
    out = tmp_path / "shards"
    report = build_shards(str(folder), out, shard_bytes=4 * 1024, max_side=None)
    index = json.loads((out / "shards.json").read_text())
    assert index["classes"] == ["cat", "dog"] and index["samples"] == 12 == report.samples
    assert len(index["shards"]) > 1  # 4 KiB shards: several
    assert sum(s["samples"] for s in index["shards"]) == 12
    with tarfile.open(out / "000000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.png", "000000000.cls"]
    # PNG files are stored as they are: the shards decode to exactly the folder's images
    from_shards = load_dataset(str(out), split_seed=1)
    from_folder = load_dataset(str(folder), split_seed=1)
    _same(_whole(from_shards), _whole(from_folder))
    assert from_shards.train.ids[0].startswith(str(out / "000000.tar") + "::")
    # written shuffled (seeded): not class by class, and the same order again for the same seed
    labels = catalog_shards(find_shard_sets(str(out))[0]).label.tolist()
    assert sorted(labels) == [0] * 7 + [1] * 5 and labels != sorted(labels)
    again = tmp_path / "again"
    build_shards(str(folder), again, shard_bytes=4 * 1024, max_side=None)
    assert (again / "000000.tar").read_bytes() == (out / "000000.tar").read_bytes()


def test_build_keeps_the_official_split_and_reads_archives(tmp_path: Path, class_tree) -> None:
    root = tmp_path / "data"
    class_tree(root / "train", {"a": 4, "b": 4})
    class_tree(root / "test", {"a": 2, "b": 2})
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="data")
    out = tmp_path / "shards"
    build_shards(str(archive), out, shard_bytes=10**9, max_side=None)
    assert (out / "train" / "shards.json").is_file() and (out / "test" / "000000.tar").is_file()
    shards = load_dataset(str(out))
    assert shards.official_split
    _same(shards.train, load_dataset(str(root)).train)
    _same(shards.test, load_dataset(str(root)).test)


def test_max_side_resizes_large_images_and_keeps_small_ones(tmp_path: Path) -> None:
    small = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(small, format="PNG")
    assert prepare_image(small.getvalue(), 16) == (small.getvalue(), "png")
    large = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(large, format="JPEG")
    data, extension = prepare_image(large.getvalue(), 16)
    assert extension == "jpg" and Image.open(io.BytesIO(data)).size == (21, 16)
    bmp = io.BytesIO()
    Image.new("L", (8, 8), 7).save(bmp, format="BMP")
    assert prepare_image(bmp.getvalue(), None)[1] == "png"


def _foreign_shard(path: Path, samples: list[tuple[str, np.ndarray, int | None]]) -> Path:
    """A shard as other tools write it: PAX headers, folders in keys, extra .json members."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, pixels, label in samples:
            members = {"json": b'{"source": "elsewhere"}'}
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            members["png"] = buffer.getvalue()
            if label is not None:
                members["cls"] = f"{label}\n".encode()
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)


def test_foreign_shards_by_pattern(tmp_path: Path) -> None:
    for shard in range(3):
        _foreign_shard(tmp_path / f"part-{shard:02d}.tar",
                       [(f"dir/{shard}_{i}", _pixels(10 * shard + i), i % 2) for i in range(4)])
    train, test = find_shard_sets(str(tmp_path / "part-{00..02}.tar"))
    assert test is None and train.index is None
    catalog = catalog_shards(train)
    assert list(catalog.counts) == [4, 4, 4] and catalog.label.tolist() == [0, 1] * 6
    data = load_dataset(str(tmp_path / "part-{00..02}.tar"), test_fraction=0.25)
    assert len(data.train) == 9 and len(data.test) == 3
    first = next(i for i, name in enumerate(data.train.ids) if name.endswith("::dir/1_2"))
    assert np.array_equal(data.train.images[first].numpy().transpose(1, 2, 0), _pixels(12))


def test_missing_truncated_and_imageless_shards(tmp_path: Path) -> None:
    for shard in range(2):
        _foreign_shard(tmp_path / f"{shard}.tar", [(f"k{i}", _pixels(i), None) for i in range(3)])
    with pytest.raises(DataError, match=r"shard .*2\.tar named by the pattern .* does not exist"):
        find_shard_sets(str(tmp_path / "{0..2}.tar"))
    last = tmp_path / "1.tar"
    last.write_bytes(last.read_bytes()[:1200])
    with pytest.raises(DataError, match=r"1\.tar (is truncated|holds no images)|cannot read shard"):
        load_dataset(str(tmp_path / "{0..1}.tar"))
    with tarfile.open(tmp_path / "1.tar", "w") as tar:
        info = tarfile.TarInfo("k0.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match=r"shard .*1\.tar holds no images \(1 member"):
        load_dataset(str(tmp_path))


def test_truncated_image_data_names_the_shard(tmp_path: Path) -> None:
    shard = _foreign_shard(tmp_path / "0.tar", [(f"k{i}", _pixels(i), None) for i in range(3)])
    with tarfile.open(shard) as tar:
        last = tar.getmember("k2.png")
    with open(shard, "r+b") as handle:  # cut into the last image's data, keep its header
        handle.truncate(last.offset_data + 10)
    with pytest.raises(DataError, match=r"shard .*0\.tar is truncated: member 'k2\.png'"):
        load_dataset(str(tmp_path))


def test_corrupt_sample_is_named_or_skipped(tmp_path: Path) -> None:
    shard = _foreign_shard(tmp_path / "0.tar", [(f"k{i}", _pixels(i), 0) for i in range(4)])
    raw = bytearray(shard.read_bytes())
    at = raw.index(b"IHDR", raw.index(b"k1.png"))  # the second image's PNG header
    raw[at:at + 4] = b"XXXX"
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"0\.tar::k1: .*--skip-bad-files"):
        load_dataset(str(tmp_path))
    data = load_dataset(str(tmp_path), skip_bad_files=True, test_fraction=0.5)
    assert len(data.train) + len(data.test) == 3 and len(data.skipped) == 1
    assert "0.tar::k1" in data.skipped[0]
