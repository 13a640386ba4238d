"""Image-caption pairs: the data of CLIP and SigLIP with a text tower.

Three layouts (:func:`load_image_captions` picks one from ``--data``):

* **a folder of images with a sidecar caption file per image**: ``cat/0001.jpg`` +
  ``cat/0001.txt`` (any depth of sub-folders; hidden files ignored). Every non-empty line of the
  ``.txt`` is one caption of the image, so an image with 5 lines gives 5 pairs.
* **a table** ``.csv`` / ``.tsv`` / ``.jsonl`` (optionally ``.gz``): one pair per row. A CSV/TSV
  with a header names the columns ``path`` (or ``image``, ``file``) and ``caption`` (or
  ``text``); without a header each row is ``path,caption``. A JSONL line is an object with those
  keys. Paths are relative to the table's folder (absolute paths are kept); rows naming the same
  path share one decoded image.
* **WebDataset shards** (a shard folder, a brace pattern, a folder with ``train/``): each
  sample's image member and its ``.txt`` member (the shard catalogue's offsets,
  :func:`contrastlab.data.shard_scan.scan_shard_samples`); with ``train/`` and ``test/`` folders
  only ``train/`` is read.

A bad row (an image without a caption file, an empty caption, a row without a path or a caption,
a path that does not exist, bytes that are not UTF-8, an image that cannot be decoded) raises
:class:`~contrastlab.errors.DataError` naming the file and line (or image), or with
``skip_bad_rows`` is left out and counted in ``skipped``.

Images are decoded once (:func:`contrastlab.data.decode.decode_images`) into one uint8 tensor;
with ``image_size`` every image is resized (shorter side) and centre-cropped to that square,
without it all images must have one size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.data.decode import decode_images
from contrastlab.data.image_folder import list_image_tree
from contrastlab.data.shard_format import is_brace_pattern
from contrastlab.data.shard_scan import scan_shard_samples
from contrastlab.data.shard_set import find_shard_sets, read_sample_bytes
from contrastlab.data.text import base_suffix, open_lines, split_fields
from contrastlab.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
PATH_COLUMNS = ("path", "image", "file")
CAPTION_COLUMNS = ("caption", "text")


@dataclass
class ImageCaptions:
    """Caption ``i`` describes image ``image_index[i]``.

    Attributes:
        images: uint8 (M, C, H, W), each image once.
        image_ids: the file (or ``shard::key``) of each image.
        captions: the N captions.
        image_index: int64 (N,), the image of each caption.
        name: a short name of the source for messages.
        skipped: ``"where: what is wrong"`` of every row left out under ``skip_bad_rows``.
    """

    images: Tensor
    image_ids: list[str]
    captions: list[str]
    image_index: Tensor
    name: str = "pairs"
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class _Rows:
    """Pairs before decoding: image sources (each once) and the captions pointing at them."""

    names: list[str] = field(default_factory=list)
    sources: list[bytes | Path] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    image_of: list[int] = field(default_factory=list)
    by_id: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def add(self, image_id: str, name: str, source: bytes | Path, caption: str) -> None:
        if image_id not in self.by_id:
            self.by_id[image_id] = len(self.names)
            self.names.append(name)
            self.sources.append(source)
        self.captions.append(caption)
        self.image_of.append(self.by_id[image_id])

    def bad(self, message: str, skip: bool) -> None:
        if not skip:
            raise DataError(message + " (or pass --skip-bad-files to leave bad rows out)")
        self.skipped.append(message)


def clean_caption(text: str) -> str:
    """White space collapsed to single spaces."""
    return " ".join(text.split())


def read_caption_folder(root: Path, skip_bad_rows: bool = False) -> _Rows:
    """Images with sidecar ``.txt`` captions (see the module docstring)."""
    files, _ = list_image_tree(root)
    if not files:
        raise DataError(f"the folder {root} holds no images")
    rows = _Rows()
    for relative in files:
        image = root / relative
        sidecar = image.with_suffix(".txt")
        if not sidecar.is_file():
            rows.bad(f"{image}: no caption file {sidecar.name} beside it", skip_bad_rows)
            continue
        try:
            lines = [clean_caption(line) for _, line in open_lines(sidecar)]
        except DataError as error:
            rows.bad(str(error), skip_bad_rows)
            continue
        captions = [line for line in lines if line]
        if not captions:
            rows.bad(f"{sidecar}: the caption file is empty", skip_bad_rows)
        for caption in captions:
            rows.add(str(image), str(image), image, caption)
    return rows


def read_caption_table(path: Path, skip_bad_rows: bool = False) -> _Rows:
    """Pairs of a ``.csv``/``.tsv``/``.jsonl`` table (see the module docstring)."""
    if not path.is_file():
        raise DataError(f"caption table '{path}' does not exist")
    rows = _Rows()
    cells = _json_cells(path) if base_suffix(path) == ".jsonl" else _delimited_cells(path)
    for number, cell in cells:
        where = f"{path}:{number}"
        if "error" in cell:
            rows.bad(f"{where}: {cell['error']}", skip_bad_rows)
            continue
        image_path, caption = cell.get("path"), cell.get("caption")
        if not isinstance(image_path, str) or not image_path.strip():
            rows.bad(f"{where}: the image path is missing or empty", skip_bad_rows)
            continue
        if not isinstance(caption, str) or not clean_caption(caption):
            rows.bad(f"{where}: the caption is missing or empty", skip_bad_rows)
            continue
        image = (path.parent / image_path.strip()).resolve()
        if not image.is_file():
            rows.bad(f"{where}: image '{image_path.strip()}' does not exist ({image})",
                     skip_bad_rows)
            continue
        rows.add(str(image), f"{where} ({image})", image, clean_caption(caption))
    return rows


def _pick(names: dict[str, Any], wanted: tuple[str, ...]) -> Any:
    """The value of the first of ``wanted`` that ``names`` has (None: none)."""
    return next((names[w] for w in wanted if w in names), None)


def _json_cells(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in open_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, {"error": f"not a JSON object ({error.msg})"}
            continue
        if not isinstance(value, dict):
            yield number, {"error": "not a JSON object"}
            continue
        keys = {str(k).lower(): k for k in value}
        path_key, caption_key = _pick(keys, PATH_COLUMNS), _pick(keys, CAPTION_COLUMNS)
        yield number, {"path": value.get(path_key) if path_key else None,
                       "caption": value.get(caption_key) if caption_key else None}


def _delimited_cells(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = open_lines(path)
    first = next(lines, None)
    if first is None:
        return
    delimiter = "\t" if base_suffix(path) == ".tsv" or "\t" in first[1] else ","
    header = [name.strip().lower() for name in split_fields(first[1], delimiter)]
    by_name = {name: i for i, name in enumerate(header)}
    path_at, caption_at = _pick(by_name, PATH_COLUMNS), _pick(by_name, CAPTION_COLUMNS)
    if path_at is None and caption_at is None:  # no header: every row is path, caption
        for number, line in _chain(first, lines):
            if line.strip():
                fields = split_fields(line, delimiter)
                yield number, ({"path": fields[0], "caption": fields[1]} if len(fields) == 2
                               else {"error": f"{len(fields)} field(s); expected 2 (path, "
                                     "caption) or a header naming path and caption"})
        return
    if path_at is None or caption_at is None:
        missing = "path" if path_at is None else "caption"
        raise DataError(f"{path}:1: the header names no {missing} column (found: "
                        f"{', '.join(header)}); name them path and caption")
    for number, line in lines:
        if line.strip():
            fields = split_fields(line, delimiter)
            yield number, {"path": fields[path_at] if path_at < len(fields) else None,
                           "caption": fields[caption_at] if caption_at < len(fields) else None}


def _chain(first: tuple[int, str], rest: Iterator[tuple[int, str]]
           ) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def read_caption_shards(spec: str, skip_bad_rows: bool = False) -> _Rows:
    """Image + ``.txt`` samples of WebDataset shards (see the module docstring)."""
    found = find_shard_sets(spec)
    if found is None:
        raise DataError(f"'{spec}' names no shards")
    rows = _Rows()
    for shard in found[0].paths:
        with shard.open("rb") as handle:
            for sample in scan_shard_samples(shard):
                where = f"{shard}::{sample.key}"
                if sample.text_offset < 0:
                    rows.bad(f"{where}: the sample has no .txt caption member", skip_bad_rows)
                    continue
                try:
                    caption = clean_caption(read_sample_bytes(
                        handle, sample.text_offset, sample.text_size).decode("utf-8"))
                except UnicodeDecodeError as error:
                    rows.bad(f"{where}.txt: not UTF-8 text ({error.reason})", skip_bad_rows)
                    continue
                if not caption:
                    rows.bad(f"{where}.txt: the caption is empty", skip_bad_rows)
                    continue
                image = read_sample_bytes(handle, sample.offset, sample.size)
                rows.add(where, where, image, caption)
    return rows


def load_image_captions(spec: str | Path, image_size: int | None = None,
                        skip_bad_rows: bool = False) -> ImageCaptions:
    """Read and decode the pairs of ``spec`` (a caption table, a folder of images with sidecar
    captions, or shards; see the module docstring).

    Raises:
        DataError: a bad row (without ``skip_bad_rows``) or no pair at all.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if is_brace_pattern(text) or (path.is_dir() and find_shard_sets(text) is not None):
        rows = read_caption_shards(text, skip_bad_rows)
    elif path.is_dir():
        rows = read_caption_folder(path, skip_bad_rows)
    elif base_suffix(path) in TABLE_SUFFIXES:
        rows = read_caption_table(path, skip_bad_rows)
    elif not path.exists():
        raise DataError(f"pair data '{spec}' does not exist")
    else:
        raise DataError(f"cannot tell the layout of '{spec}': give a folder of images with a .txt "
                        "caption beside each, a .csv/.tsv/.jsonl of path,caption, or .tar shards "
                        "with .jpg + .txt members")
    if not rows.captions:
        more = f" ({len(rows.skipped)} bad rows skipped)" if rows.skipped else ""
        raise DataError(f"'{spec}' holds no image-caption pair{more}")
    decoded = decode_images(rows.names, rows.sources, image_size=image_size,
                            skip_bad_files=skip_bad_rows,
                            description=f"decoding the images of {path.name or text}")
    new_index = torch.full((len(rows.names),), -1, dtype=torch.long)
    new_index[torch.as_tensor(decoded.kept, dtype=torch.long)] = torch.arange(len(decoded.kept))
    image_index = new_index[torch.as_tensor(rows.image_of, dtype=torch.long)]
    keep = image_index >= 0
    captions = [c for c, k in zip(rows.captions, keep.tolist(), strict=True) if k]
    return ImageCaptions(
        images=torch.from_numpy(decoded.images),
        image_ids=[rows.names[i] for i in decoded.kept],
        captions=captions,
        image_index=image_index[keep],
        name=path.name or text,
        skipped=rows.skipped + decoded.skipped,
    )


__all__ = ["ImageCaptions", "clean_caption", "load_image_captions", "read_caption_folder",
           "read_caption_shards", "read_caption_table"]
