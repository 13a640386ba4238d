"""Safe decoding of untrusted image bytes into the uint8 input of an encoder.

Bytes from a request (or a query file) are opened with Pillow restricted to an allow-list of
formats (PNG, JPEG, BMP, GIF, WebP, TIFF), so Pillow never hands data to an external program
(its EPS plugin runs Ghostscript) or to a rarely used decoder. The image size is read from the
header and checked against a pixel limit *before* any pixel is decoded, which stops
decompression bombs (a small PNG or GIF that inflates to gigapixels). Only the first frame of
an animated or multi-page file is decoded.

The decoded image is turned into 1 or 3 channels with the same table as the dataset readers
(:func:`contrastlab.data.decode.to_array`), converted to the encoder's channel count (RGB to
greyscale with Pillow's ITU-R 601-2 luma, greyscale to RGB by repetition) and, when its size
differs, resized like the dataset readers do: shorter side to ``size``, centre square kept,
bilinear (:func:`contrastlab.data.decode.resize_square`).
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from contrastlab.data.decode import resize_square, to_array
from contrastlab.errors import DataError

#: Pillow formats accepted from untrusted input.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

#: Default largest image accepted, in pixels (width x height): 4096 x 4096.
DEFAULT_MAX_PIXELS = 4096 * 4096

_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
    TypeError, ZeroDivisionError, struct.error, MemoryError, NotImplementedError,
)


class NotAnImageError(DataError):
    """The bytes are not a readable image in one of :data:`ALLOWED_FORMATS` (HTTP 400)."""


class ImageTooLargeError(DataError):
    """The image has more pixels than allowed (HTTP 413)."""


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width < 1 or height < 1:
        raise NotAnImageError(f"{name}: the image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the image is {width} x {height} = {width * height} pixels, over the pixel "
            f"limit of {max_pixels} pixels; send a smaller image"
        )


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (c, H, W), c in {1, 3}, converted to ``channels`` channels."""
    if array.shape[0] == channels:
        return array
    if channels == 1:
        rgb = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")
        return np.asarray(rgb.convert("L"), dtype=np.uint8)[None]
    return np.repeat(array, 3, axis=0)


def _as_pil(array: np.ndarray) -> Image.Image:
    if array.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(array[0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")


def decode_image(
    data: bytes,
    channels: int,
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "image",
) -> np.ndarray:
    """Decode untrusted image bytes to uint8 (channels, size, size).

    Args:
        data: the encoded image.
        channels: channels the encoder expects (1 or 3).
        size: side the encoder expects, in pixels.
        max_pixels: largest accepted width x height.
        name: how the image is called in error messages (a field name, never a server path).

    Raises:
        NotAnImageError: empty bytes, an unknown or disallowed format, a corrupt or truncated
            file.
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise NotAnImageError(f"{name}: no image data (empty)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning: our explicit limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_FORMATS) as img:
                _check_pixels(img.width, img.height, max_pixels, name)
                if img.format == "JPEG":
                    img.draft(img.mode, (size, size))
                img.load()
                array = to_array(img)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{name}: the image is over the pixel limit of {max_pixels} pixels (Pillow: {error}); "
            "send a smaller image") from error
    except (ImageTooLargeError, NotAnImageError):
        raise
    except _DECODE_ERRORS as error:
        formats = ", ".join(ALLOWED_FORMATS)
        raise NotAnImageError(
            f"{name}: not a readable image (accepted formats: {formats}; "
            f"{error.__class__.__name__})"
        ) from error
    array = _to_channels(array, channels)
    if array.shape[1:] != (size, size):
        array = to_array(resize_square(_as_pil(array), size))
    return np.ascontiguousarray(array)


def read_image_file(path: str, channels: int, size: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a local image file (a query given on the command line) like :func:`decode_image`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataError(f"cannot read image file '{path}': {error.strerror or error}") from error
    return decode_image(data, channels, size, max_pixels, name=str(path))
