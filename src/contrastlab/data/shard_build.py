"""``contrastlab shards build``: write any dataset contrastlab reads as WebDataset tar shards.

Image folders and ``.tar``/``.tar.gz`` archives are streamed file by file (only the list of names
and one image are in memory at a time; an archive is read twice per side, once for its names and
once for its images); the other sources (digits, Fashion-MNIST, CIFAR batches, IDX, ``.npz``)
are small and are read with :func:`contrastlab.data.load_dataset`, then each image is stored as
a PNG. A dataset with an official split is written as ``OUT/train/`` and ``OUT/test/``; otherwise
the shards go straight into ``OUT``. Each shard folder gets its ``shards.json``.

Samples are written in a shuffled order (seeded, ``--seed``): a folder's files and an in-memory
source's images in a random permutation, an archive's images (read front to back) through a
shuffle buffer of :data:`ARCHIVE_SHUFFLE_BUFFER` images. Folders list images class by class, and
a stream reads each shard's samples in order through a bounded shuffle buffer, so shards written
in folder order would give batches of only a few classes (about 3 points of kNN accuracy lost on
CIFAR-10 in docs/benchmarks.md).

An image is stored as it is (its original bytes, nothing decoded) when it is a JPEG, PNG or
WebP whose shorter side is at most ``max_side``; an image with a longer shorter side is decoded
(JPEG at reduced scale, see Pillow's draft mode), resized to a shorter side of ``max_side``
(bilinear, antialiased, aspect kept) and stored as JPEG quality 90; other formats (BMP, GIF,
TIFF) are converted to PNG. Only the header of an image stored as it is was read, so corrupt
image data in such a file is found when the shards are read (``--skip-bad-files`` then).
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from contrastlab.atomic import write_text_atomic
from contrastlab.data.archive import _clean_member_name, is_archive_name
from contrastlab.data.dataset import ImageDataset
from contrastlab.data.decode import _DECODE_ERRORS, _describe_error, is_image_name
from contrastlab.data.image_folder import list_image_tree
from contrastlab.data.layout import Part, plan_layout, unwrap_single_folder
from contrastlab.data.shard_format import INDEX_NAME, ShardIndex
from contrastlab.data.shard_writer import ShardSample, write_shards
from contrastlab.errors import DataError
from contrastlab.phases import phase

#: Pillow formats stored with their original bytes, and the extension they get.
_KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
JPEG_QUALITY = 90
#: Images of an archive held at once to shuffle its order (an archive is read front to back).
ARCHIVE_SHUFFLE_BUFFER = 10_000


@dataclass
class BuildReport:
    """What a build wrote: per side (``""``, ``train``, ``test``) the shard counts, and the
    files skipped under ``skip_bad_files`` (with the reason)."""

    sides: dict[str, dict[str, int]]
    skipped: list[str]

    @property
    def samples(self) -> int:
        return sum(sum(counts.values()) for counts in self.sides.values())


def prepare_image(data: bytes, max_side: int | None) -> tuple[bytes, str]:
    """The bytes to store for one encoded image and their extension (see the module doc).

    Raises whatever Pillow raises for a file it cannot read.
    """
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        kept = _KEPT_FORMATS.get(img.format or "")
        small = max_side is None or min(width, height) <= max_side
        if kept is not None and small:
            return data, kept
        if not small:
            assert max_side is not None
            scale = max_side / min(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            if img.format == "JPEG":
                img.draft("RGB" if img.mode != "L" else "L", target)
            img.load()
            converted = img if img.mode in ("L", "RGB") else img.convert("RGB")
            resized = converted.resize(target, Image.Resampling.BILINEAR)
            out = io.BytesIO()
            resized.save(out, format="JPEG", quality=JPEG_QUALITY)
            return out.getvalue(), "jpg"
        img.load()
        converted = img if img.mode in ("L", "RGB", "RGBA", "LA") else img.convert("RGB")
        out = io.BytesIO()
        converted.save(out, format="PNG")
        return out.getvalue(), "png"


def _array_png(image: np.ndarray) -> bytes:
    """A uint8 (C, H, W) image as PNG bytes."""
    picture = (Image.fromarray(image[0], mode="L") if image.shape[0] == 1
               else Image.fromarray(image.transpose(1, 2, 0), mode="RGB"))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


#: One image of a source: (its name for messages, a function returning its bytes, its label).
Source = tuple[str, Callable[[], bytes], int | None]


@dataclass
class _Side:
    """The images of one side of the dataset, as an iterable that can be read once."""

    name: str
    total: int
    images: Callable[[], Iterator[Source]]


def _shuffled(count: int, seed: int) -> list[int]:
    """The order samples are written in: a seeded permutation of ``0 .. count - 1``."""
    return np.random.default_rng([seed, 0x5EED]).permutation(count).tolist()


def _folder_sides(root: Path, seed: int) -> tuple[list[str] | None, list[_Side]]:
    files, dirs = list_image_tree(root)
    plan = plan_layout(files, dirs, lambda rel: str(root / rel) if rel else str(root))

    def side(part: Part, name: str) -> _Side:
        labels = part.labels or [None] * len(part.paths)

        def images() -> Iterator[Source]:
            for number in _shuffled(len(part.paths), seed):
                path = root / part.paths[number]
                yield str(path), path.read_bytes, labels[number]

        return _Side(name, len(part.paths), images)

    if plan.test is None:
        return plan.classes, [side(plan.train, "")]
    return plan.classes, [side(plan.train, "train"), side(plan.test, "test")]


def _archive_names(archive: Path) -> tuple[list[str], list[str]]:
    """The image member paths and folder paths of an archive (headers only)."""
    files: list[str] = []
    dirs: set[str] = set()
    for member, parts in _members(archive):
        dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        if member.isdir():
            dirs.add("/".join(parts))
        elif member.isreg() and is_image_name(parts[-1]):
            files.append("/".join(parts))
    return sorted(files), sorted(dirs)


def _members(archive: Path, tar_out: list[tarfile.TarFile] | None = None
             ) -> Iterator[tuple[tarfile.TarInfo, list[str]]]:
    """Every member of ``archive`` with a usable name, front to back (streamed)."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            if tar_out is not None:
                tar_out.append(tar)
            for member in tar:
                parts = _clean_member_name(member.name)
                if parts is not None:
                    yield member, parts
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc.__class__.__name__}: {exc}. Check "
                        "that it is a complete .tar, .tar.gz or .tgz file") from exc


def _buffer_shuffled(items: Iterator[Source], size: int, seed: int) -> Iterator[Source]:
    """``items`` through a seeded shuffle buffer of ``size`` (an archive is read front to back,
    so its images can only be mixed this far)."""
    rng = np.random.default_rng([seed, 0x5EED])
    held: list[Source] = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        slot = int(rng.integers(size))
        yield held[slot]
        held[slot] = item
    for slot in rng.permutation(len(held)).tolist():
        yield held[slot]


def _archive_sides(archive: Path, seed: int) -> tuple[list[str] | None, list[_Side]]:
    files, dirs = _archive_names(archive)
    prefix, files, dirs = unwrap_single_folder(files, dirs)
    base = f"{prefix}/" if prefix else ""
    plan = plan_layout(files, dirs, lambda rel: f"{archive}::{base}{rel}".rstrip(":/"))

    def side(part: Part, name: str) -> _Side:
        labels = dict(zip((base + path for path in part.paths),
                          part.labels or [None] * len(part.paths), strict=True))

        def members() -> Iterator[Source]:
            holder: list[tarfile.TarFile] = []
            for member, parts in _members(archive, holder):
                path = "/".join(parts)
                if path in labels and member.isreg():
                    handle = holder[0].extractfile(member)
                    data = b"" if handle is None else handle.read()
                    yield f"{archive}::{path}", lambda data=data: data, labels[path]

        def images() -> Iterator[Source]:
            return _buffer_shuffled(members(), ARCHIVE_SHUFFLE_BUFFER, seed)

        return _Side(name, len(part.paths), images)

    if plan.test is None:
        return plan.classes, [side(plan.train, "")]
    return plan.classes, [side(plan.train, "train"), side(plan.test, "test")]


def _memory_sides(spec: str, seed: int) -> tuple[list[str] | None, list[_Side]]:
    from contrastlab.data.loader import load_dataset

    splits = load_dataset(spec)
    parts = [(splits.train, "")] if not splits.official_split or splits.test is None else [
        (splits.train, "train"), (splits.test, "test")]
    if splits.test is not None and not splits.official_split:
        # no official split: every image goes into one shard set
        joined = ImageDataset(
            images=torch.cat([splits.train.images, splits.test.images]),
            labels=None if splits.train.labels is None or splits.test.labels is None
            else torch.cat([splits.train.labels, splits.test.labels]),
            classes=splits.train.classes, ids=splits.train.ids + splits.test.ids,
            name=splits.train.name)
        parts = [(joined, "")]

    def side(data: ImageDataset, name: str) -> _Side:
        def images() -> Iterator[Source]:
            array = data.images.numpy()
            for row in _shuffled(len(data), seed):
                label = None if data.labels is None else int(data.labels[row])
                yield data.ids[row], lambda row=row: _array_png(array[row]), label

        return _Side(name, len(data), images)

    return splits.train.classes, [side(data, name) for data, name in parts]


def _sides(spec: str, seed: int) -> tuple[list[str] | None, list[_Side]]:
    path = Path(spec).expanduser()
    if path.is_file() and is_archive_name(path):
        return _archive_sides(path, seed)
    if path.is_dir() and not _is_special_folder(path):
        return _folder_sides(path, seed)
    return _memory_sides(spec, seed)


def _is_special_folder(path: Path) -> bool:
    """A CIFAR batch folder or an IDX folder (read into memory, not as an image tree)."""
    from contrastlab.data.cifar import find_cifar_folder
    from contrastlab.data.idx import find_idx_files

    return find_cifar_folder(path) is not None or bool(find_idx_files(path))


def build_shards(spec: str, out: Path, *, shard_bytes: int, max_side: int | None,
                 skip_bad_files: bool = False, seed: int = 0) -> BuildReport:
    """Write the dataset ``spec`` as shards in ``out`` (see the module doc), the samples in an
    order shuffled by ``seed``.

    Raises:
        DataError: an unreadable image (without ``skip_bad_files``), an unreadable source.
        WriteError: a file-system failure while writing.
    """
    classes, sides = _sides(spec, seed)
    skipped: list[str] = []
    written: dict[str, dict[str, int]] = {}
    for side in sides:
        folder = out / side.name if side.name else out
        description = f"writing the {side.name or 'whole'} set of {spec} as shards in {folder}"
        with phase(description, total=side.total) as progress:

            def samples(side: _Side = side) -> Iterator[ShardSample]:
                for number, (name, read, label) in enumerate(side.images()):
                    try:
                        data, extension = prepare_image(read(), max_side)
                    except (*_DECODE_ERRORS, DataError) as exc:
                        if not skip_bad_files:
                            raise DataError(
                                f"cannot read image file {name}: {_describe_error(exc)}. Fix or "
                                "remove the file, or pass --skip-bad-files to leave it out"
                            ) from exc
                        skipped.append(f"{name}: {_describe_error(exc)}")
                        progress.advance()
                        continue
                    yield ShardSample(f"{number:09d}", data, extension, label)

            counts = write_shards(samples(), folder, shard_bytes, on_sample=progress.advance)
        if not counts:
            raise DataError(f"no readable image in the {side.name or 'whole'} set of {spec}; "
                            "nothing was written")
        index = ShardIndex(classes=classes, counts=counts, max_side=max_side)
        write_text_atomic(folder / INDEX_NAME, index.to_json(), "shard index")
        written[side.name] = counts
    return BuildReport(sides=written, skipped=skipped)


__all__ = ["BuildReport", "JPEG_QUALITY", "build_shards", "prepare_image"]
