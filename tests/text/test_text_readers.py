"""Text readers: sentences (.txt, .txt.gz), pairs (TSV/CSV/JSONL, the STS Benchmark layout);
bad rows named by file and line, or skipped and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from contrastlab.data.text import read_pairs, read_sentences
from contrastlab.errors import DataError

STS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "stsbenchmark"


def test_sentences_one_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("a cat sits .\n\n  a dog runs .  \r\n")
    assert read_sentences(path).texts == ["a cat sits .", "a dog runs ."]
    gz = tmp_path / "s.txt.gz"
    gz.write_bytes(gzip.compress(b"one\ntwo\n"))
    assert read_sentences(gz).texts == ["one", "two"]


def test_sentences_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"s\.txt:2: not UTF-8"):
        read_sentences(path)


def test_empty_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no sentence"):
        read_sentences(tmp_path / "e.txt")
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_sentences(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="does not exist"):
        read_sentences(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="pairs are needed"):
        read_pairs(tmp_path / "e.txt")


def test_tsv_two_and_three_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\t4.5\nc\td\t1\n")
    pairs = read_pairs(path)
    assert (pairs.first, pairs.second, pairs.scores) == (["a", "c"], ["b", "d"], [4.5, 1.0])
    path.write_text("a\tb\nc\td\n")
    assert read_pairs(path).scores is None


def test_csv_with_header_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('score,sentence1,sentence2,negative\n3,"a, b",c,"n"\n')
    pairs = read_pairs(path)
    assert pairs.first == ["a, b"] and pairs.second == ["c"] and pairs.scores == [3.0]
    assert pairs.negatives == ["n"]


def test_jsonl_and_read_sentences_of_pairs(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [{"sentence1": "a", "sentence2": "b", "score": 2}, {"sentence1": "c", "sentence2": "d",
                                                              "score": 5}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_pairs(path).scores == [2.0, 5.0]
    assert read_sentences(path).texts == ["a", "b", "c", "d"]


@pytest.mark.parametrize("line,reason", [
    ("a\t\t3", "sentence 2 is missing"),
    ("a\tb\tnot-a-number", "score 'not-a-number' is not a number"),
    ("a\tb\tnan", "score 'nan' is not finite"),
    ("a\tb\tc\td", "4 tab-separated field"),
])
def test_a_bad_row_names_file_and_line_or_is_skipped(tmp_path: Path, line: str,
                                                     reason: str) -> None:
    path = tmp_path / "p.tsv"
    path.write_text(f"x\ty\t1\n{line}\nz\tw\t2\n")
    with pytest.raises(DataError, match=rf"p\.tsv:2: {reason}.*--skip-bad-files"):
        read_pairs(path)
    pairs = read_pairs(path, skip_bad_rows=True)
    assert pairs.first == ["x", "z"] and len(pairs.skipped) == 1 and ":2:" in pairs.skipped[0]


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not a JSON object"):
        read_pairs(path)
    assert len(read_pairs(path, skip_bad_rows=True)) == 1


def test_sts_benchmark_layout_with_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\ta plane .\tan air plane .\n"
                    "main-news\tx\t2012\t0002\t0.5\tone \"quoted\t two\textra\tmore\n")
    pairs = read_pairs(path)
    assert pairs.scores == [5.0, 0.5] and pairs.first[1] == 'one "quoted'
    assert pairs.second == ["an air plane .", "two"]


@pytest.mark.skipif(not (STS / "sts-test.csv").is_file(), reason="shared STS-B not present")
def test_the_shared_sts_benchmark_reads_completely() -> None:
    sizes = {name: len(read_pairs(STS / f"sts-{name}.csv")) for name in ("train", "dev", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "test": 1379}
