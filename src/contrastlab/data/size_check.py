"""Failing fast on images of an odd size, from their headers, before anything is decoded.

Without ``image_size`` every image of a dataset must have one size. Pillow opens a file lazily
(it reads the header, not the pixels), so the sizes of 50,000 files are known in a few seconds,
where decoding them takes minutes; :func:`check_sizes` does that first and names the odd file,
its size, the size most images have, and what to do. Files whose header cannot be read, and
odd-sized files that do not decode in full (a truncated file's header still gives a size), are
left to the decoding, which reports them as unreadable (or skips them with ``skip_bad_files``).
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from contrastlab.errors import DataError
from contrastlab.phases import phase

_HEADER_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError,
    EOFError, IndexError, KeyError, TypeError, ZeroDivisionError, struct.error,
)


def header_size(source: bytes | Path) -> tuple[int, int] | None:
    """``(width, height)`` from an image's header, or None when it cannot be read."""
    stream: io.BytesIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream) as img:
            return img.size
    except _HEADER_ERRORS:
        return None


def decodes(source: bytes | Path) -> bool:
    """The whole image decodes (not only its header)."""
    stream: io.BytesIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream) as img:
            img.load()
        return True
    except _HEADER_ERRORS:
        return False


def check_sizes(names: Sequence[str], sources: Sequence[bytes | Path],
                description: str = "reading image headers") -> None:
    """Raise DataError when the images' headers give more than one size (see the module doc)."""
    sizes: list[tuple[int, int] | None] = []
    with phase(description, total=len(sources)) as progress:
        for source in sources:
            sizes.append(header_size(source))
            progress.advance()
    counts = Counter(size for size in sizes if size is not None)
    if len(counts) <= 1:
        return
    (common, how_many), = counts.most_common(1)
    odd = [index for index, size in enumerate(sizes) if size is not None and size != common]
    first_readable = next((index for index in odd if decodes(sources[index])), None)
    if first_readable is None:
        return  # every odd one is unreadable: the decoding names it (or skips it)
    odd.insert(0, odd.pop(odd.index(first_readable)))
    example = sizes.index(common)
    width, height = sizes[odd[0]] or (0, 0)
    more = f" ({len(odd) - 1} other image(s) differ too)" if len(odd) > 1 else ""
    raise DataError(
        f"images have different sizes: {names[odd[0]]} is {width}x{height} (width x height) but "
        f"{how_many} of the {len(sizes)} images are {common[0]}x{common[1]} (e.g. "
        f"{names[example]}){more}; found from the file headers before decoding. Pass "
        "--image-size N (image_size=N) to resize every image to N x N as it is decoded, or "
        "remove or resize the odd file(s)")


__all__ = ["check_sizes", "header_size"]
