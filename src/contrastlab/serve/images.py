"""Safe decoding of untrusted image bytes into the uint8 input of an encoder.

Bytes from a request (or a query file) are opened with Pillow restricted to an allow-list of
formats (PNG, JPEG, BMP, GIF, WebP, TIFF), so Pillow never hands data to an external program
(its EPS plugin runs Ghostscript) or to a rarely used decoder. Decoding is two steps:

1. :func:`open_image` reads only the header and refuses, before any pixel is decoded, images
   over the limits of :class:`ImageLimits`: more pixels than ``max_pixels`` (a decompression
   bomb: a small PNG or GIF that inflates to gigapixels), a side longer than ``max_side`` or an
   aspect ratio beyond ``max_aspect_ratio`` (a 1 x 16,777,216 PNG costs seconds to decode and
   resize, and the encoder would see one pixel of it). A JPEG is then set to decode at reduced
   scale (libjpeg's DCT scaling by 1/2, 1/4 or 1/8, Pillow's ``draft``) as long as it stays at
   least as large as the encoder's input, and refused when it holds too little data for the size
   its header announces (:mod:`contrastlab.serve.jpeg_check`). The result says how many pixels
   decoding will produce (:attr:`OpenedImage.decoded_pixels`), which the service charges
   against a per-request budget.
2. :meth:`OpenedImage.decode` decodes the first frame (of an animated or multi-page file) and
   checks that the decoder produced the size announced; truncated files raise (Pillow's
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set here and must stay False).

The decoded image is turned into 1 or 3 channels with the same table as the dataset readers
(:func:`contrastlab.data.decode.to_array`), converted to the encoder's channel count (RGB to
greyscale with Pillow's ITU-R 601-2 luma, greyscale to RGB by repetition) and, when its size
differs, resized like the dataset readers do: shorter side to ``size``, centre square kept,
bilinear (:func:`contrastlab.data.decode.resize_square`).
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from contrastlab.data.decode import resize_square, to_array
from contrastlab.errors import DataError
from contrastlab.serve.jpeg_check import jpeg_data_shortfall

#: Pillow formats accepted from untrusted input.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

#: Default largest image accepted, in pixels (width x height): 4096 x 4096.
DEFAULT_MAX_PIXELS = 4096 * 4096
#: Default longest side accepted, in pixels (WebP's own maximum).
DEFAULT_MAX_SIDE = 16_384
#: Default largest ratio of the longer to the shorter side (panoramas are up to about 10).
DEFAULT_MAX_ASPECT_RATIO = 20.0

_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
    TypeError, ZeroDivisionError, struct.error, MemoryError, NotImplementedError,
)

# warnings.catch_warnings changes process-wide state: opening is serialised (it reads headers
# only, so this costs little), and decoding, which is where the time goes, runs in parallel.
_OPEN_LOCK = threading.Lock()


class NotAnImageError(DataError):
    """The bytes are not a readable image in one of :data:`ALLOWED_FORMATS` (HTTP 400)."""


class ImageTooLargeError(DataError):
    """The image is over a size limit of :class:`ImageLimits` (HTTP 413)."""


@dataclass(frozen=True)
class ImageLimits:
    """What one image may be, judged from its header before decoding."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO

    def check(self, width: int, height: int, name: str) -> None:
        """Raise ImageTooLargeError (or NotAnImageError for no pixels) for a refused size."""
        if width < 1 or height < 1:
            raise NotAnImageError(f"{name}: the image has no pixels ({width} x {height})")
        size = f"{name}: the image is {width} x {height}"
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"{size} = {width * height} pixels, over the pixel limit of {self.max_pixels} "
                "pixels; send a smaller image")
        if max(width, height) > self.max_side:
            raise ImageTooLargeError(
                f"{size} pixels: its longer side is over the limit of {self.max_side} pixels; "
                "send a smaller image")
        ratio = max(width, height) / min(width, height)
        if ratio > self.max_aspect_ratio:
            raise ImageTooLargeError(
                f"{size} pixels: its aspect ratio {ratio:.4g}:1 is over the limit of "
                f"{self.max_aspect_ratio:g}:1 (the encoder sees only the centre square); crop "
                "it first")


def _not_an_image(name: str, error: BaseException | None = None, why: str = "") -> NotAnImageError:
    formats = ", ".join(ALLOWED_FORMATS)
    reason = why or (type(error).__name__ if error is not None else "")
    if isinstance(error, UnidentifiedImageError):  # its text holds a memory address
        reason = "an unknown format, or an empty or corrupt file"
    elif error is not None and str(error).strip() and not why:
        reason = f"{reason}: {str(error).strip().splitlines()[0][:120]}"
    return NotAnImageError(f"{name}: not a readable image (accepted formats: {formats}; "
                           f"{reason})")


@dataclass
class OpenedImage:
    """An image whose header was read and accepted, not yet decoded (see the module doc)."""

    name: str
    image: Image.Image
    header_size: tuple[int, int]

    @property
    def decoded_size(self) -> tuple[int, int]:
        """Width and height decoding will produce (smaller than the header's for a JPEG
        decoded at reduced scale)."""
        return self.image.size

    @property
    def decoded_pixels(self) -> int:
        width, height = self.decoded_size
        return width * height

    def decode(self, channels: int, size: int) -> np.ndarray:
        """uint8 (channels, size, size); NotAnImageError for a corrupt or truncated file."""
        expected = self.decoded_size
        try:
            self.image.load()
            if self.image.size != expected:
                raise _not_an_image(self.name, why=f"it decodes to {self.image.size[0]} x "
                                    f"{self.image.size[1]} pixels, not the {expected[0]} x "
                                    f"{expected[1]} its header announces")
            array = to_array(self.image)
        except NotAnImageError:
            raise
        except _DECODE_ERRORS as error:
            raise _not_an_image(self.name, error) from error
        finally:
            self.close()
        array = _to_channels(array, channels)
        if array.shape[1:] != (size, size):
            array = to_array(resize_square(_as_pil(array), size))
        return np.ascontiguousarray(array)

    def close(self) -> None:
        self.image.close()


def open_image(data: bytes, size: int, limits: ImageLimits | None = None,
               name: str = "image") -> OpenedImage:
    """Read the header of untrusted image bytes and accept or refuse the image.

    Args:
        data: the encoded image.
        size: side the encoder expects, in pixels (a JPEG is decoded at reduced scale down to
            it).
        limits: size limits (default :class:`ImageLimits`).
        name: how the image is called in error messages (a field name, never a server path).

    Raises:
        NotAnImageError: empty bytes, an unknown or disallowed format, a corrupt header, a JPEG
            with too little data for its size.
        ImageTooLargeError: over a size limit.
    """
    limits = limits or ImageLimits()
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise NotAnImageError(f"{name}: no image data (empty)")
    data = bytes(data)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow's own bomb warning: our explicit limits below decide instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{name}: the image is over the pixel limit of {limits.max_pixels} pixels (Pillow: "
            f"{error}); send a smaller image") from error
    except _DECODE_ERRORS as error:
        raise _not_an_image(name, error) from error
    try:
        limits.check(image.width, image.height, name)
        header = image.size
        if image.format == "JPEG":
            shortfall = jpeg_data_shortfall(data)
            if shortfall is not None:
                raise _not_an_image(name, why=(
                    f"the JPEG holds {shortfall[0]:,} bytes of image data, fewer than the "
                    f"{shortfall[1]:,} that {header[0]} x {header[1]} pixels need at the least: "
                    "it is truncated or corrupt"))
            image.draft(image.mode, (size, size))
        return OpenedImage(name, image, header)
    except BaseException as error:
        image.close()
        if isinstance(error, (NotAnImageError, ImageTooLargeError)) or \
                not isinstance(error, _DECODE_ERRORS):
            raise
        raise _not_an_image(name, error) from error


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
    limits: ImageLimits | None = None,
) -> np.ndarray:
    """Decode untrusted image bytes to uint8 (channels, size, size): :func:`open_image`, then
    :meth:`OpenedImage.decode`.

    Args:
        data: the encoded image.
        channels: channels the encoder expects (1 or 3).
        size: side the encoder expects, in pixels.
        max_pixels: largest accepted width x height (when ``limits`` is not given).
        name: how the image is called in error messages (a field name, never a server path).
        limits: all size limits (overrides ``max_pixels``).

    Raises:
        NotAnImageError: empty bytes, an unknown or disallowed format, a corrupt, truncated or
            lying file.
        ImageTooLargeError: over a size limit.
    """
    limits = limits or ImageLimits(max_pixels=max_pixels)
    return open_image(data, size, limits, name).decode(channels, size)


def read_image_file(path: str, channels: int, size: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a local image file (a query given on the command line) like :func:`decode_image`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataError(f"cannot read image file '{path}': {error.strerror or error}") from error
    return decode_image(data, channels, size, max_pixels, name=str(path))
