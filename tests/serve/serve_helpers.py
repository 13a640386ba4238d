"""Helpers shared by the serving tests (a module name no other test folder uses)."""

from __future__ import annotations

import contextlib
import io
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
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


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """Mount a ``size`` tmpfs (read-only when asked) on ``folder`` for the duration: a real file
    system that fills up. Skips the test when mounting is not permitted (needs root)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({error})")
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs to fill up (mount needs root or CAP_SYS_ADMIN: "
                    f"{mounted.stderr.strip() or mounted.returncode})")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
