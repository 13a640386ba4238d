"""Decoding image files (from disk or from bytes) into one uint8 array, in a thread pool.

Shared by the image-folder and the archive readers. Every image is opened with Pillow, fully
decoded (so truncated files fail here, not later) and turned into 1 (grey) or 3 (colour) channels:

* ``L``: 1 channel, unchanged. ``RGB``: 3 channels, unchanged.
* ``1`` (bilevel): 1 channel, 0 or 255.
* ``LA``, ``La``: 1 channel, composited onto black (value * alpha / 255).
* ``I;16`` (and ``I;16B``, ``I;16L``, ``I;16N``): 1 channel, 16-bit values scaled to 8 bits
  (round(v / 257)).
* ``I`` (32-bit integer, how some 16-bit files open): 1 channel, clipped to 0..65535, then / 257.
* ``F`` (32-bit float): 1 channel; values within 0..1 are scaled by 255, others clipped to 0..255.
* ``RGBA``, ``RGBa``, ``PA``: 3 channels, composited onto black.
* ``P`` (palette): 3 channels (palette transparency composited onto black).
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX`` and any other mode: 3 channels, via Pillow's
  ``convert("RGB")``.

Animated or multi-page files (GIF, TIFF, WebP) contribute their first frame. EXIF orientation is
not applied. With ``image_size`` set, the shorter side is resized to ``image_size`` and the centre
square is kept (bilinear, antialiased when shrinking; images smaller than ``image_size`` are
enlarged), so every image is ``image_size`` squared. Files are recognised by their content, not
their extension (a PNG named ``.jpg`` is read as a PNG).

Without ``image_size`` the sizes are first read from the headers
(:mod:`contrastlab.data.size_check`), so a dataset with one image of an odd size fails before
anything is decoded. A file that cannot be decoded (corrupt, truncated, empty, not an image)
raises DataError naming it, or with ``skip_bad_files`` is left out and reported with its reason.
All images must end with the same channel count and, without ``image_size``, the same size;
otherwise DataError names one file of each kind.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from contrastlab.data.size_check import check_sizes
from contrastlab.errors import DataError
from contrastlab.phases import phase

#: File extensions read as images (compared in lower case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS"})
_ALPHA_GREY_MODES = frozenset({"LA", "La"})
_ALPHA_COLOUR_MODES = frozenset({"RGBA", "RGBa", "PA"})

_CHUNK = 256


def is_image_name(name: str) -> bool:
    """True when ``name`` (a file name or path) has one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _composite_on_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Multiply uint8 ``colour`` (H, W[, C]) by ``alpha`` (H, W) / 255, rounding to uint8."""
    weights = alpha.astype(np.uint32)
    if colour.ndim == 3:
        weights = weights[:, :, None]
    return ((colour.astype(np.uint32) * weights + 127) // 255).astype(np.uint8)


def to_array(img: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to uint8 (C, H, W), C in {1, 3} (see the module doc)."""
    mode = img.mode
    if mode == "L":
        grey = np.asarray(img, dtype=np.uint8)
        return grey[None]
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8)[None]
    if mode in _ALPHA_GREY_MODES:
        pixels = np.asarray(img.convert("LA"), dtype=np.uint8)
        return _composite_on_black(pixels[:, :, 0], pixels[:, :, 1])[None]
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.uint32)
        return ((values + 128) // 257).astype(np.uint8)[None]
    if mode == "I":
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return ((values + 128) // 257).astype(np.uint8)[None]
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            values = values * 255.0
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)[None]
    if mode in _ALPHA_COLOUR_MODES or (mode == "P" and "transparency" in img.info):
        pixels = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        rgb = _composite_on_black(pixels[:, :, :3], pixels[:, :, 3])
        return rgb.transpose(2, 0, 1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side of ``img`` to ``size`` and keep the centre ``size`` x ``size``."""
    width, height = img.size
    if (width, height) == (size, size):
        return img
    side = min(width, height)
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    if img.mode not in ("L", "RGB"):
        raise ValueError(f"cannot resize mode {img.mode}")
    return img.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )


def _array_to_image(array: np.ndarray) -> Image.Image:
    """Turn uint8 (1|3, H, W) into a Pillow ``L`` or ``RGB`` image."""
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(array.transpose(1, 2, 0), mode="RGB")


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) images like :func:`resize_square` (as is when already square)."""
    if images.shape[2:] == (size, size):
        return images
    out = np.empty((images.shape[0], images.shape[1], size, size), dtype=np.uint8)
    for row, image in enumerate(images):
        out[row] = to_array(resize_square(_array_to_image(image), size))
    return out


def decode_one(source: bytes | Path, image_size: int | None = None) -> np.ndarray:
    """Decode one image (file path or encoded bytes) to uint8 (C, H, W).

    Raises whatever Pillow raises for a bad file (see ``_DECODE_ERRORS``).
    """
    stream: io.BytesIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as img:
        if image_size is not None and img.format == "JPEG":
            img.draft(img.mode, (image_size, image_size))
        img.load()
        if img.mode in ("L", "RGB"):
            decoded = img
        else:
            decoded = _array_to_image(to_array(img))
        if image_size is not None:
            decoded = resize_square(decoded, image_size)
        return to_array(decoded)


def _describe_error(exc: BaseException) -> str:
    """A short reason for a decoding failure, for messages and ``skipped``."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (unknown format, empty or corrupt file)"
    text = str(exc).strip() or "no details"
    return f"{exc.__class__.__name__}: {text}"


@dataclass
class DecodeResult:
    """Decoded images and which sources they came from.

    Attributes:
        images: uint8 array (K, C, H, W) of the readable sources, in source order.
        kept: indices (into the sources) of the K decoded images.
        skipped: ``"<name>: <reason>"`` for every source left out under ``skip_bad_files``.
    """

    images: np.ndarray
    kept: list[int]
    skipped: list[str]


def _decode_chunk(
    chunk: Sequence[tuple[int, bytes | Path]], image_size: int | None
) -> list[tuple[int, np.ndarray | None, str | None]]:
    """Decode a chunk of ``(index, source)``; a failure gives ``(index, None, reason)``."""
    out: list[tuple[int, np.ndarray | None, str | None]] = []
    for index, source in chunk:
        try:
            out.append((index, decode_one(source, image_size), None))
        except _DECODE_ERRORS as exc:
            out.append((index, None, _describe_error(exc)))
    return out


def decode_images(
    names: Sequence[str],
    sources: Sequence[bytes | Path],
    *,
    image_size: int | None = None,
    skip_bad_files: bool = False,
    workers: int | None = None,
    description: str = "decoding images",
) -> DecodeResult:
    """Decode many images in a thread pool and stack them into one uint8 (N, C, H, W) array.

    Args:
        names: how each image is named in messages (a path, or ``archive::member``).
        sources: the file path or the encoded bytes of each image.
        image_size: when set, resize (shorter side, centre crop) every image to this square size.
        skip_bad_files: leave unreadable files out (listed in ``skipped``) instead of failing.
        workers: thread count; defaults to the CPU count.
        description: what the progress line says (e.g. ``decoding images of data/train``).

    Raises:
        DataError: an unreadable file (without ``skip_bad_files``), no readable image at all,
            images with different channel counts, or different sizes without ``image_size``.
    """
    if len(names) != len(sources):
        raise ValueError("names and sources must have the same length")
    if not names:
        raise DataError("no image files to read")
    if image_size is None:  # one odd size fails here, in seconds, not after the whole decode
        check_sizes(names, sources, f"{description}: reading the headers")
    indexed = list(enumerate(sources))
    chunks = [indexed[i : i + _CHUNK] for i in range(0, len(indexed), _CHUNK)]
    threads = max(1, min(workers or (os.cpu_count() or 1), len(chunks)))
    stack = _Stacker(len(names))
    with phase(description, total=len(names)) as progress:
        if threads == 1:
            for chunk in chunks:
                stack.add(_decode_chunk(chunk, image_size))
                progress.advance(len(chunk))
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
                for part in pool.map(lambda chunk: _decode_chunk(chunk, image_size), chunks):
                    stack.add(part)
                    progress.advance(len(part))
    return stack.finish(names, skip_bad_files)


class _Stacker:
    """Copies decoded images, in source order, into one preallocated array; notes problems."""

    def __init__(self, total: int) -> None:
        """Prepare for ``total`` sources."""
        self.total = total
        self.array: np.ndarray | None = None
        self.reference = -1
        self.kept: list[int] = []
        self.failures: list[tuple[int, str]] = []
        self.other_channels: int | None = None
        self.other_size: tuple[int, tuple[int, ...]] | None = None

    def add(self, part: Sequence[tuple[int, np.ndarray | None, str | None]]) -> None:
        """Take the results of one decoded chunk (chunks must arrive in source order)."""
        for index, image, reason in part:
            if image is None:
                self.failures.append((index, reason or "unreadable"))
                continue
            if self.array is None:
                self.array = np.empty((self.total, *image.shape), dtype=np.uint8)
                self.reference = index
            if image.shape[0] != self.array.shape[1]:
                if self.other_channels is None:
                    self.other_channels = index
                continue
            if image.shape != self.array.shape[1:]:
                if self.other_size is None:
                    self.other_size = (index, image.shape)
                continue
            self.array[len(self.kept)] = image
            self.kept.append(index)

    def finish(self, names: Sequence[str], skip_bad_files: bool) -> DecodeResult:
        """Raise DataError for the first problem noted, else return the stacked images."""
        if self.failures and not skip_bad_files:
            index, reason = self.failures[0]
            others = len(self.failures) - 1
            more = f" ({others} other file(s) are unreadable too)" if others else ""
            raise DataError(
                f"cannot read image file {names[index]}: {reason}{more}. Fix or remove the file, "
                "or pass --skip-bad-files (skip_bad_files=True) to skip unreadable files"
            )
        skipped = [f"{names[i]}: {reason}" for i, reason in self.failures]
        if self.array is None:
            raise DataError(
                f"none of the {len(names)} image file(s) could be read (first: {skipped[0]}); "
                "check that they are valid image files"
            )
        channels = self.array.shape[1]
        if self.other_channels is not None:
            grey, colour = self.reference, self.other_channels
            if channels != 1:
                grey, colour = colour, grey
            raise DataError(
                f"images have different channel counts: {names[grey]} is greyscale (1 channel) "
                f"but {names[colour]} is colour (3 channels). Convert them all to one mode (e.g. "
                "all to RGB with Pillow's Image.convert('RGB'), or all to greyscale with "
                "convert('L')) before loading"
            )
        if self.other_size is not None:
            height, width = self.array.shape[2:]
            index, shape = self.other_size
            raise DataError(
                f"images have different sizes: {names[self.reference]} is {width}x{height} "
                f"(width x height) but {names[index]} is {shape[2]}x{shape[1]}. Pass "
                "--image-size N (image_size=N) to resize every image to N x N"
            )
        return DecodeResult(images=self.array[: len(self.kept)], kept=self.kept, skipped=skipped)
