"""Fixtures that write tiny image datasets for the ``contrastlab.data`` tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ImageWriter = Callable[..., Path]


def _pixels(seed: int, size: tuple[int, int], channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    width, height = size
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def write_image() -> ImageWriter:
    """Return ``write(path, seed=0, size=(8, 8), mode="RGB")`` that saves a random image."""

    def write(
        path: Path, seed: int = 0, size: tuple[int, int] = (8, 8), mode: str = "RGB", **save: object
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        Image.fromarray(_pixels(seed, size, channels), mode=mode).save(path, **save)
        return path

    return write


@pytest.fixture
def class_tree(write_image: ImageWriter) -> Callable[..., Path]:
    """Return ``make(root, {"cat": 5, "dog": 5}, ext="png", mode="RGB")`` writing class folders."""

    def make(
        root: Path,
        counts: dict[str, int],
        ext: str = "png",
        mode: str = "RGB",
        size: tuple[int, int] = (8, 8),
    ) -> Path:
        seed = 0
        for name, count in counts.items():
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(folder / f"{i:03d}.{ext}", seed=seed, size=size, mode=mode)
                seed += 1
        return root

    return make
