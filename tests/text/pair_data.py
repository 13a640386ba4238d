"""Tiny image-caption data for the image-text tests: solid-colour 8x8 images with captions."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}


def image_bytes(colour: tuple[int, int, int], shade: int = 0) -> bytes:
    image = Image.new("RGB", (8, 8), tuple(max(0, c - 9 * shade) for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(root: Path, per_class: int = 3) -> Path:
    """``root/<colour>/<i>.png`` + ``<i>.txt`` ("a red square"); class folders, so the same
    folder serves zero-shot evaluation."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(image_bytes(colour, i))
            (root / name / f"{i}.txt").write_text(f"a {name} square\n")
    return root


def write_shard(path: Path, rows: list[tuple[str, bytes | None, str | None]]) -> Path:
    """A WebDataset shard of ``(key, image bytes or None, caption or None)``."""
    with tarfile.open(path, "w") as tar:
        for key, image, caption in rows:
            for suffix, data in (("png", image), ("txt", None if caption is None
                                                  else caption.encode("utf-8"))):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
