"""Text readers: a file of sentences, and sentence pairs with optional scores.

Formats (picked by the file's name; ``.gz`` is decompressed on the fly):

* ``.txt`` / ``.txt.gz``: one sentence per line; blank lines are skipped (not errors).
* ``.tsv`` / ``.csv`` (and their ``.gz``): one pair per row. The delimiter is a tab when the
  first line holds one (the STS Benchmark's ``.csv`` files are tab-separated), else a comma
  (quoted fields as in RFC 4180). The columns are, by the number of fields on the row:

  - a header row naming ``sentence1`` and ``sentence2`` (and ``score``, ``negative``; also
    ``text1``/``text2``, ``label``): those columns on every row;
  - otherwise 2 fields: sentence 1, sentence 2; 3 fields: sentence 1, sentence 2, score;
  - 7 or more fields: the STS Benchmark's layout (genre, file, year, id, score, sentence 1,
    sentence 2); extra fields after the seventh are ignored, as the STS files have some.

* ``.jsonl`` (and ``.gz``): one object per line with ``sentence1``, ``sentence2``, optionally
  ``score`` and ``negative`` (a hard negative for sentence 1).

A bad row (a missing sentence, a score that is not a finite number, a line that is not JSON,
bytes that are not UTF-8) raises :class:`~contrastlab.errors.DataError` naming the file and the
line, or with ``skip_bad_rows`` is left out and counted in ``skipped`` (with its reason).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contrastlab.errors import DataError

SENTENCE_SUFFIXES = (".txt",)
PAIR_SUFFIXES = (".tsv", ".csv", ".jsonl")
HEADER_NAMES = {"sentence1": "first", "text1": "first", "sentence2": "second",
                "text2": "second", "score": "score", "label": "score", "negative": "negative"}
#: the STS Benchmark's columns: genre, file, year, id, score, sentence 1, sentence 2
STS_FIELDS = 7


@dataclass
class Sentences:
    """Sentences read from one or more files, in file order."""

    texts: list[str]
    skipped: list[str] = field(default_factory=list)


@dataclass
class SentencePairs:
    """Pairs (``first[i]``, ``second[i]``) with their scores (None where a file has none) and
    hard negatives for ``first[i]`` (None where a file has none)."""

    first: list[str]
    second: list[str]
    scores: list[float] | None = None
    negatives: list[str] | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.first)


def base_suffix(path: Path) -> str:
    """The suffix that names the format: ``.tsv`` for ``pairs.tsv.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without its newline)``; DataError naming a missing or non-UTF-8
    file (the line of the first undecodable byte)."""
    if not path.is_file():
        raise DataError(f"text file '{path}' does not exist")
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
    with raw:
        try:
            for number, line in enumerate(raw, start=1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(f"{path}:{number}: not UTF-8 text ({error.reason} at byte "
                                    f"{error.start}); save the file as UTF-8") from None
                yield number, text.rstrip("\r\n")
        except (OSError, EOFError) as error:  # a truncated or corrupt .gz
            raise DataError(f"cannot read '{path}': {error}") from None


def read_sentences(path: str | Path, skip_bad_rows: bool = False) -> Sentences:
    """Sentences of a ``.txt``/``.txt.gz`` file (one per line, blank lines skipped), or both
    sentences of every pair of a pairs file (see the module docstring), in order."""
    path = Path(path)
    suffix = base_suffix(path)
    if suffix in PAIR_SUFFIXES:
        pairs = read_pairs(path, skip_bad_rows)
        texts = [s for pair in zip(pairs.first, pairs.second, strict=True) for s in pair]
        return Sentences(texts, pairs.skipped)
    if suffix not in SENTENCE_SUFFIXES:
        raise DataError(_unknown_format(path))
    texts, skipped = [], []
    try:
        for _, line in open_lines(path):
            if line.strip():
                texts.append(line.strip())
    except DataError as error:
        if not skip_bad_rows or not path.is_file():
            raise
        skipped.append(str(error))
    if not texts:
        raise DataError(f"'{path}' holds no sentence: give a text file with one sentence per "
                        "line")
    return Sentences(texts, skipped)


def _unknown_format(path: Path) -> str:
    return (f"cannot tell the format of '{path}' from its name: use .txt (one sentence per line), "
            ".tsv/.csv (sentence pairs) or .jsonl (objects with sentence1, sentence2), "
            "optionally .gz")


def read_pairs(path: str | Path, skip_bad_rows: bool = False) -> SentencePairs:
    """Sentence pairs of a ``.tsv``/``.csv``/``.jsonl`` file (see the module docstring).

    Raises:
        DataError: naming the file and line of a bad row (without ``skip_bad_rows``), or a file
            with no pair at all.
    """
    path = Path(path)
    suffix = base_suffix(path)
    if suffix not in PAIR_SUFFIXES:
        raise DataError(_unknown_format(path) if suffix not in SENTENCE_SUFFIXES else
                        f"'{path}' is a file of sentences, but pairs are needed here: give a "
                        ".tsv/.csv/.jsonl of sentence pairs")
    rows = _json_rows(path) if suffix == ".jsonl" else _delimited_rows(path)
    pairs = SentencePairs([], [], [], [])
    has_score = has_negative = True
    for number, row in rows:
        try:
            first, second, score, negative = _check_row(row)
        except ValueError as error:
            message = f"{path}:{number}: {error}"
            if not skip_bad_rows:
                raise DataError(message + " (or pass --skip-bad-files to leave bad rows out)"
                                ) from None
            pairs.skipped.append(message)
            continue
        pairs.first.append(first)
        pairs.second.append(second)
        has_score = has_score and score is not None
        has_negative = has_negative and negative is not None
        pairs.scores.append(score if score is not None else math.nan)  # type: ignore[union-attr]
        pairs.negatives.append(negative or "")  # type: ignore[union-attr]
    if not pairs.first:
        raise DataError(f"'{path}' holds no sentence pair"
                        + (f" ({len(pairs.skipped)} bad rows skipped)" if pairs.skipped else ""))
    pairs.scores = pairs.scores if has_score else None
    pairs.negatives = pairs.negatives if has_negative else None
    return pairs


def _check_row(row: dict[str, str | float | None]) -> tuple[str, str, float | None, str | None]:
    if row.get("_error"):
        raise ValueError(str(row["_error"]))
    first, second = row.get("first"), row.get("second")
    for name, text in (("sentence 1", first), ("sentence 2", second)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} is missing or empty")
    score = row.get("score")
    if score is not None and score != "":
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"score '{score}' is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"score '{score}' is not finite")
    else:
        score = None
    negative = row.get("negative")
    if negative is not None and (not isinstance(negative, str) or not negative.strip()):
        raise ValueError("the hard negative is empty or not text")
    return (str(first).strip(), str(second).strip(), score,  # type: ignore[return-value]
            negative.strip() if isinstance(negative, str) else None)


def _json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in open_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            value = {"_error": f"not a JSON object ({error.msg})"}
        if not isinstance(value, dict):
            value = {"_error": "not a JSON object"}
        if "_error" in value:
            yield number, {"_error": value["_error"]}
            continue
        row = {HEADER_NAMES[k]: v for k, v in value.items() if k in HEADER_NAMES}
        yield number, row


def _delimited_rows(path: Path) -> Iterator[tuple[int, dict]]:
    lines = open_lines(path)
    first_line = next(lines, None)
    if first_line is None:
        return
    delimiter = "\t" if "\t" in first_line[1] else ","
    columns: dict[int, str] | None = None
    header = split_fields(first_line[1], delimiter)
    if any(name.strip().lower() in HEADER_NAMES for name in header) and len(header) >= 2:
        columns = {i: HEADER_NAMES[n.strip().lower()] for i, n in enumerate(header)
                   if n.strip().lower() in HEADER_NAMES}
        if not {"first", "second"} <= set(columns.values()):
            raise DataError(f"{path}:1: the header names no 'sentence1' and 'sentence2' columns "
                            f"(found: {', '.join(header)})")
        remaining: Iterator[tuple[int, str]] = lines
    else:
        remaining = _chain(first_line, lines)
    for number, line in remaining:
        if not line.strip():
            continue
        fields = split_fields(line, delimiter)
        if columns is not None:
            yield number, {name: fields[i] if i < len(fields) else None
                           for i, name in columns.items()}
        elif len(fields) >= STS_FIELDS:
            yield number, {"score": fields[4], "first": fields[5], "second": fields[6]}
        elif len(fields) in (2, 3):
            yield number, {"first": fields[0], "second": fields[1],
                           "score": fields[2] if len(fields) == 3 else None}
        else:
            kind = "tab-separated" if delimiter == "\t" else "comma-separated"
            yield number, {"_error": f"{len(fields)} {kind} field(s); expected 2 (sentence 1, "
                           "sentence 2), 3 (and a score) or the STS Benchmark's 7"}


def _chain(first: tuple[int, str], rest: Iterator[tuple[int, str]]
           ) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def split_fields(line: str, delimiter: str) -> list[str]:
    if delimiter == "\t":  # the STS files hold unbalanced quotes: no quoting with tabs
        return line.split("\t")
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


__all__ = ["SentencePairs", "Sentences", "base_suffix", "open_lines", "read_pairs",
           "read_sentences", "split_fields"]
