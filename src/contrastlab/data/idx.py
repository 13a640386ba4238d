"""Reading MNIST-style IDX files (MNIST, Fashion-MNIST and the like), gzipped or raw.

A folder is an IDX dataset when it holds ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``
and/or ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (also with a '.' before ``idx``,
and with or without ``.gz``; names compared without regard to case). With both pairs the data has
its official split; with one pair the split is drawn with ``test_fraction`` and ``split_seed``.

The IDX format: two zero bytes, a type code (only 0x08, unsigned byte, is accepted), the number of
dimensions, then each dimension as a big-endian 32-bit integer, then the values. Images become
uint8 (N, 1, H, W) and need at least 1 x 1 pixel. Classes are "0".."9", or the Fashion-MNIST
names when asked for.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.split import make_dataset, official_splits, split_dataset
from contrastlab.errors import DataError

MNIST_CLASSES: list[str] = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_PREFIXES = ("train", "t10k")
_KINDS = {"images": "idx3", "labels": "idx1"}
_UNSIGNED_BYTE = 0x08


def _candidate_names(prefix: str, kind: str) -> list[str]:
    """Accepted file names of one IDX file, e.g. ``train-images-idx3-ubyte.gz``."""
    idx = _KINDS[kind]
    names = [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]
    return names + [name + ".gz" for name in names]


def find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """Map ``(prefix, kind)`` (e.g. ``("t10k", "images")``) to the IDX file in ``folder``."""
    try:
        present = {entry.name.lower(): entry for entry in folder.iterdir() if entry.is_file()}
    except OSError:
        return {}
    found: dict[tuple[str, str], Path] = {}
    for prefix in _PREFIXES:
        for kind in _KINDS:
            for name in _candidate_names(prefix, kind):
                if name in present:
                    found[(prefix, kind)] = present[name]
                    break
    return found


def read_idx(path: Path) -> np.ndarray:
    """Read one unsigned-byte IDX file (optionally gzipped) into a uint8 array of its dimensions.

    Raises:
        DataError: naming the file, for a bad gzip stream, a wrong magic number, another value type
            or a file shorter or longer than its header says.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"IDX file {path} is a damaged or truncated gzip file ({exc}); download it again"
            ) from exc
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, too short for a header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"IDX file {path} has a wrong magic number 0x{raw[:4].hex()} (expected 0x0000080N); "
            "it is not an MNIST-style IDX file"
        )
    if raw[2] != _UNSIGNED_BYTE:
        raise DataError(
            f"IDX file {path} stores values of type code 0x{raw[2]:02x}; only unsigned bytes "
            "(0x08) are supported"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"IDX file {path} is truncated or has a bad header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header
    if actual != expected:
        state = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {state}: the header announces {expected} values "
            f"(shape {dims}) but {actual} follow; download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_pair(images_path: Path, labels_path: Path, classes: list[str], name: str) -> ImageDataset:
    """Read an images/labels pair into one labelled dataset, checking that they agree."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"IDX file {images_path} has shape {images.shape}; images need 3 dimensions (N, H, W)"
        )
    if labels.ndim != 1:
        raise DataError(f"IDX file {labels_path} has shape {labels.shape}; labels need 1 dimension")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; use files from the same release"
        )
    if len(images) == 0:
        raise DataError(f"IDX file {images_path} holds no images")
    if 0 in images.shape[1:]:
        raise DataError(
            f"IDX file {images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels; "
            "an image needs at least 1x1"
        )
    if int(labels.max()) >= len(classes):
        raise DataError(
            f"IDX file {labels_path} has label {int(labels.max())}, outside 0..{len(classes) - 1}"
        )
    ids = [f"{images_path}:{i}" for i in range(len(images))]
    return make_dataset(images[:, None], labels.astype(np.int64), list(classes), ids, name)


def _class_names(labels_max: int, fashion: bool) -> list[str]:
    """Class names for labels up to ``labels_max``."""
    names = FASHION_MNIST_CLASSES if fashion else MNIST_CLASSES
    if labels_max < len(names):
        return list(names)
    return [str(i) for i in range(labels_max + 1)]


def read_idx_folder(
    folder: Path, *, test_fraction: float, split_seed: int, fashion: bool | None = None
) -> DatasetSplits:
    """Read an IDX folder (official split with both pairs, else a seeded stratified split).

    Args:
        folder: the folder holding the IDX files.
        test_fraction: share of the test side when only one pair of files exists.
        split_seed: seed of that split.
        fashion: use the Fashion-MNIST class names; None decides by the folder path (a path
            component containing "fashion").
    """
    files = find_idx_files(folder)
    if fashion is None:
        fashion = any("fashion" in part.lower() for part in folder.resolve().parts)
    name = "fashion-mnist" if fashion else folder.name or "mnist"
    pairs: dict[str, tuple[Path, Path]] = {}
    for prefix in _PREFIXES:
        images_path = files.get((prefix, "images"))
        labels_path = files.get((prefix, "labels"))
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            have = images_path or labels_path
            want = _candidate_names(prefix, "labels" if labels_path is None else "images")
            raise DataError(
                f"{have} has no partner file in {folder}: expected one of {', '.join(want)}"
            )
        pairs[prefix] = (images_path, labels_path)
    if not pairs:
        raise DataError(
            f"{folder} holds no IDX files (train-images-idx3-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz] and their labels)"
        )
    top = 9
    for _, labels_path in pairs.values():
        labels = read_idx(labels_path)
        if labels.size:
            top = max(top, int(labels.max()))
    classes = _class_names(top, fashion)
    if len(pairs) == 2:
        train = _read_pair(*pairs["train"], classes, f"{name} (train)")
        test = _read_pair(*pairs["t10k"], classes, f"{name} (test)")
        return official_splits(train, test)
    ((_, pair),) = pairs.items()
    data = _read_pair(*pair, classes, name)
    return split_dataset(data, test_fraction=test_fraction, split_seed=split_seed)
