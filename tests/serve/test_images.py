"""Safe decoding of untrusted image bytes: formats, channels, size, bombs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contrastlab.errors import DataError
from contrastlab.serve.images import (
    ImageTooLargeError,
    NotAnImageError,
    decode_image,
    read_image_file,
)
from tests.serve.serve_helpers import encode_png, png_bomb


def test_grey_png_of_the_right_size_is_returned_unchanged() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    out = decode_image(encode_png(pixels), channels=1, size=8)
    assert out.dtype == np.uint8 and out.shape == (1, 8, 8)
    assert np.array_equal(out[0], pixels)


def test_rgb_to_grey_uses_the_itu_601_luma() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    out = decode_image(encode_png(rgb), channels=1, size=6)
    # Pillow's L = R * 299/1000 + G * 587/1000 + B * 114/1000 (rounded); allow 1 for rounding.
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    assert np.abs(out[0].astype(float) - expected).max() <= 1.0


def test_grey_to_rgb_repeats_the_channel() -> None:
    grey = np.random.default_rng(2).integers(0, 256, (5, 5), dtype=np.uint8)
    out = decode_image(encode_png(grey), channels=3, size=5)
    assert out.shape == (3, 5, 5)
    for channel in range(3):
        assert np.array_equal(out[channel], grey)


def test_rgba_is_composited_onto_black() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 51  # alpha 0.2
    out = decode_image(encode_png(rgba), channels=3, size=4)
    assert np.all(out == 40)


def test_other_sizes_are_resized_shorter_side_then_centre_crop() -> None:
    wide = np.zeros((10, 20), dtype=np.uint8)
    wide[:, 5:15] = 255  # the centre 10x10 square is white, the sides black
    out = decode_image(encode_png(wide), channels=1, size=5)
    assert out.shape == (1, 5, 5)
    # Only the white centre square remains (bilinear filtering blurs its edge a little);
    # squeezing the whole 20x10 image would have made the outer columns dark.
    assert out[0, :, 2].min() == 255 and out.min() >= 200


def test_jpeg_bmp_gif_webp_tiff_are_accepted() -> None:
    pixels = np.full((8, 8, 3), 128, dtype=np.uint8)
    for fmt in ("JPEG", "BMP", "GIF", "WEBP", "TIFF"):
        out = decode_image(encode_png(pixels, fmt=fmt), channels=3, size=8)
        assert out.shape == (3, 8, 8)
        assert abs(int(out.mean()) - 128) <= 3, fmt


@pytest.mark.parametrize("data", [b"", b"hello, world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
                                  b"GIF89a" + b"\x01" * 3])
def test_bytes_that_are_not_an_image_raise_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        decode_image(data, channels=1, size=8)


def test_truncated_png_raises_not_an_image() -> None:
    data = encode_png(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(NotAnImageError):
        decode_image(data[: len(data) // 2], channels=1, size=8)


def test_formats_outside_the_allow_list_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buffer, format="PPM")  # a format Pillow reads, not allowed
    with Image.open(io.BytesIO(buffer.getvalue())) as check:
        assert check.format == "PPM"
    with pytest.raises(NotAnImageError, match="accepted formats"):
        decode_image(buffer.getvalue(), channels=1, size=8)


@pytest.mark.parametrize("side", [5_000, 100_000])
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    # 25 megapixels (over our default limit, under Pillow's) and 10 gigapixels (over both),
    # claimed by files of a few hundred bytes.
    bomb = png_bomb(side, side)
    assert len(bomb) < 500
    with pytest.raises(ImageTooLargeError, match="over the pixel limit of 16777216"):
        decode_image(bomb, channels=1, size=8)


def test_pixel_limit_is_configurable() -> None:
    data = encode_png(np.zeros((40, 40), dtype=np.uint8))
    assert decode_image(data, 1, 8, max_pixels=1600).shape == (1, 8, 8)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, 1, 8, max_pixels=1599)


def test_error_messages_name_the_field_not_a_path() -> None:
    with pytest.raises(NotAnImageError, match=r"^image_a: "):
        decode_image(b"nope", 1, 8, name="image_a")


def test_read_image_file(tmp_path) -> None:
    path = tmp_path / "q.png"
    path.write_bytes(encode_png(np.full((8, 8), 9, dtype=np.uint8)))
    assert read_image_file(str(path), 1, 8).max() == 9
    with pytest.raises(DataError, match="cannot read image file"):
        read_image_file(str(tmp_path / "missing.png"), 1, 8)
