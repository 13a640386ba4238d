"""Image-caption pairs: sidecar .txt folders, CSV/TSV/JSONL tables, WebDataset shards; bad rows
named by file and line (or image), or skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contrastlab.data.captions import load_image_captions
from contrastlab.data.shard_scan import scan_shard, scan_shard_samples
from contrastlab.errors import DataError
from tests.text.pair_data import COLOURS, image_bytes, write_folder, write_shard


def test_folder_with_sidecar_captions(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pairs", per_class=2)
    (root / "red" / "0.txt").write_text("a red square\n\n  a  crimson   block \n")
    pairs = load_image_captions(root)
    assert pairs.images.shape == (8, 3, 8, 8) and pairs.images.dtype == torch.uint8
    assert len(pairs) == 9  # two captions for red/0
    first = pairs.image_ids.index(str(root / "red" / "0.png"))
    captions = [c for c, i in zip(pairs.captions, pairs.image_index.tolist(), strict=True)
                if i == first]
    assert captions == ["a red square", "a crimson block"]
    assert pairs.images[first, 0, 0, 0] == COLOURS["red"][0]


def test_folder_missing_and_empty_captions(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pairs", per_class=1)
    (root / "red" / "0.txt").unlink()
    with pytest.raises(DataError, match=r"red/0\.png: no caption file 0\.txt.*--skip-bad-files"):
        load_image_captions(root)
    (root / "blue" / "0.txt").write_text("\n \n")
    pairs = load_image_captions(root, skip_bad_rows=True)
    assert len(pairs) == 2 and len(pairs.skipped) == 2
    assert any("blue/0.txt: the caption file is empty" in s for s in pairs.skipped)


def test_csv_paths_relative_to_the_table(tmp_path: Path) -> None:
    write_folder(tmp_path / "img", per_class=1)
    table = tmp_path / "pairs.csv"
    table.write_text('path,caption\nimg/red/0.png,"a red, bright square"\n'
                     "img/red/0.png,another caption\nimg/blue/0.png,a blue square\n")
    pairs = load_image_captions(table)
    assert pairs.captions == ["a red, bright square", "another caption", "a blue square"]
    assert pairs.image_index.tolist() == [0, 0, 1] and pairs.images.shape[0] == 2
    headless = tmp_path / "sub" / "p.tsv"
    headless.parent.mkdir()
    headless.write_text("../img/green/0.png\ta green square\n")
    assert load_image_captions(headless).captions == ["a green square"]


def test_table_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    write_folder(tmp_path / "img", per_class=1)
    table = tmp_path / "pairs.csv"
    table.write_text("image,text\nimg/red/0.png,ok\nimg/none.png,missing\nimg/blue/0.png,\n")
    with pytest.raises(DataError, match=r"pairs\.csv:3: image 'img/none\.png' does not exist"):
        load_image_captions(table)
    pairs = load_image_captions(table, skip_bad_rows=True)
    assert pairs.captions == ["ok"] and len(pairs.skipped) == 2
    assert "pairs.csv:4: the caption is missing or empty" in pairs.skipped[1]
    (tmp_path / "h.csv").write_text("path,label\nimg/red/0.png,1\n")
    with pytest.raises(DataError, match=r"h\.csv:1: the header names no caption column"):
        load_image_captions(tmp_path / "h.csv")


def test_jsonl_and_undecodable_image(tmp_path: Path) -> None:
    write_folder(tmp_path / "img", per_class=1)
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    table = tmp_path / "pairs.jsonl"
    rows = [{"path": "img/red/0.png", "caption": "a red square"}, "not an object",
            {"image": "img/bad.png", "caption": "broken"}]
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: not a JSON object"):
        load_image_captions(table)
    (tmp_path / "one.jsonl").write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(DataError, match=r"one\.jsonl:1 .*bad\.png\): not a readable image"):
        load_image_captions(tmp_path / "one.jsonl")
    pairs = load_image_captions(table, skip_bad_rows=True)
    assert pairs.captions == ["a red square"] and len(pairs.skipped) == 3


def test_shards_with_txt_members(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "000000.tar", [("a", image_bytes(COLOURS["red"]), "a red square"),
                                        ("b", image_bytes(COLOURS["blue"]), "a blue square")])
    write_shard(folder / "000001.tar", [("c", image_bytes(COLOURS["green"]), None),
                                        ("d", image_bytes(COLOURS["yellow"]), "a yellow one")])
    samples = scan_shard_samples(folder / "000000.tar")
    assert [s.key for s in samples] == ["a", "b"] and all(s.text_offset > 0 for s in samples)
    assert scan_shard(folder / "000000.tar")[3] == ["a", "b"]  # the image catalogue unchanged
    with pytest.raises(DataError, match=r"000001\.tar::c: the sample has no \.txt caption"):
        load_image_captions(folder)
    pairs = load_image_captions(folder, skip_bad_rows=True)
    assert pairs.captions == ["a red square", "a blue square", "a yellow one"]
    assert len(pairs.skipped) == 1 and pairs.images[2, 1, 0, 0] == COLOURS["yellow"][1]
    pattern = load_image_captions(str(folder / "{000000..000000}.tar"))
    assert len(pattern) == 2


def test_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_captions(tmp_path / "none.csv")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="cannot tell the layout"):
        load_image_captions(tmp_path / "x.parquet")
