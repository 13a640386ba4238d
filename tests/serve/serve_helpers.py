"""Helpers shared by the serving tests (a module name no other test folder uses)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode_png(pixels: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    """Encode a uint8 (H, W) or (H, W, C) array as an image file in memory."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header claims ``width`` x ``height`` grey pixels (the
    pixel data is a few compressed rows; decoding would allocate the full size first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + min(width, 4096)) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))
