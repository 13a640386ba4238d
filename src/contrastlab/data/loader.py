"""``load_dataset``: one entry point that recognises every accepted dataset spec.

A spec is a dataset name (``digits``, ``fashion-mnist``) or a path: a folder of images, a
``.tar``/``.tar.gz``/``.tgz`` archive of one, a CIFAR-10/100 python batch folder, a folder of
MNIST-style IDX files, or an ``.npz`` file. Nothing is ever downloaded. Names are matched before
paths (pass ``./digits`` for a folder called ``digits``). See :func:`describe_accepted`.

Image files are decoded to 1 channel (``L``; ``1``, ``LA``, 16-bit ``I;16``/``I`` and float ``F``
become greyscale, 16-bit values scaled down to 8 bits) or 3 channels (``RGB``; ``RGBA``, ``P``,
``CMYK``, ``YCbCr`` and the rest become RGB, transparency composited onto black); the full table
is in :mod:`contrastlab.data.decode`. Everything is held in memory as uint8 (N, C, H, W).
"""

from __future__ import annotations

from pathlib import Path

import torch

from contrastlab.data.archive import is_archive_name, read_archive
from contrastlab.data.cifar import find_cifar_folder, read_cifar
from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.decode import resize_batch
from contrastlab.data.decoded_cache import cached_splits
from contrastlab.data.digits import read_digits
from contrastlab.data.idx import find_idx_files, read_idx_folder
from contrastlab.data.image_folder import read_image_folder
from contrastlab.data.npz import read_npz
from contrastlab.data.shard_memory import read_shards
from contrastlab.data.shard_set import ShardSet, find_shard_sets
from contrastlab.data.split import check_test_fraction, split_dataset
from contrastlab.errors import DataError

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_DIGITS_NAMES = frozenset({"digits", "sklearn-digits"})
_FASHION_NAMES = frozenset({"fashion-mnist", "fashion_mnist", "fashionmnist"})


def describe_accepted() -> str:
    """One paragraph listing every accepted dataset spec (for error messages and CLI help)."""
    return (
        "Accepted datasets: 'digits' (scikit-learn's bundled 8x8 digits); 'fashion-mnist' (the "
        f"Debian package dataset-fashion-mnist, read from {FASHION_MNIST_DIR}); a folder of "
        "images (png, jpg, jpeg, bmp, gif, webp, tif, tiff) with one sub-folder per class, or "
        "with train/ and test/ (or val/) folders of class folders for an official split, or "
        "with images only for unlabeled data; a .tar, .tar.gz or .tgz archive of such a folder; "
        "a CIFAR-10 or CIFAR-100 'python version' batch folder; a folder of MNIST-style IDX "
        "files (train-/t10k-images-idx3-ubyte and -labels-idx1-ubyte, optionally .gz); an .npz "
        "file with uint8 images 'x' (N,H,W) or (N,H,W,C) and optional labels 'y', or "
        "x_train/y_train/x_test/y_test; WebDataset tar shards: a folder of .tar shards (with "
        "or without shards.json; train/ and test/ shard folders for an official split) or a "
        "brace pattern such as 'shards/{000000..000099}.tar'. Nothing is downloaded."
    )


def _check_image_size(image_size: int | None) -> int | None:
    """Return ``image_size`` unchanged, or raise DataError unless it is None or a positive int."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive whole number of pixels, got {image_size!r}")
    return image_size


def _resize(data: ImageDataset, size: int | None) -> ImageDataset:
    """``data`` with every image resized to ``size`` x ``size`` (itself when nothing changes)."""
    if size is None or data.image_size == (size, size):
        return data
    resized = resize_batch(data.images.numpy(), size)
    return ImageDataset(
        images=torch.from_numpy(resized),
        labels=data.labels,
        classes=data.classes,
        ids=data.ids,
        name=data.name,
    )


def shard_sets_of(spec: str) -> tuple[ShardSet, ShardSet | None] | None:
    """The training (and official test) shards ``spec`` names, or None when ``spec`` is a
    dataset name or not shards (as :func:`load_dataset` recognises them)."""
    text = str(spec).strip()
    if text.lower() in _DIGITS_NAMES or text.lower() in _FASHION_NAMES:
        return None
    return find_shard_sets(text)


def _fashion_mnist(test_fraction: float, split_seed: int) -> DatasetSplits:
    """Read the Debian-packaged Fashion-MNIST, or explain how to get it."""
    if not FASHION_MNIST_DIR.is_dir() or not find_idx_files(FASHION_MNIST_DIR):
        raise DataError(
            f"Fashion-MNIST was not found in {FASHION_MNIST_DIR}; install it with "
            "'apt-get install dataset-fashion-mnist', or pass the path of a folder holding its "
            "IDX files (train-images-idx3-ubyte.gz, ...)"
        )
    return read_idx_folder(
        FASHION_MNIST_DIR, test_fraction=test_fraction, split_seed=split_seed, fashion=True
    )


def _read(
    spec: str, fraction: float, split_seed: int, skip_bad_files: bool, size: int | None
) -> DatasetSplits:
    """Dispatch ``spec`` to its reader (arguments already checked)."""
    text = spec
    lowered = spec.lower()
    if lowered in _DIGITS_NAMES:
        return split_dataset(read_digits(), test_fraction=fraction, split_seed=split_seed)
    if lowered in _FASHION_NAMES:
        return _fashion_mnist(fraction, split_seed)
    shards = shard_sets_of(text)
    if shards is not None:
        return read_shards(*shards, test_fraction=fraction, split_seed=split_seed,
                           skip_bad_files=skip_bad_files, image_size=size)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {text!r} is neither a known name nor an existing path. {describe_accepted()}"
        )
    if path.is_file():
        if is_archive_name(path):
            return read_archive(
                path,
                test_fraction=fraction,
                split_seed=split_seed,
                skip_bad_files=skip_bad_files,
                image_size=size,
            )
        if path.suffix.lower() == ".npz":
            return read_npz(path, test_fraction=fraction, split_seed=split_seed)
        raise DataError(
            f"cannot read dataset file {path}: unknown file type. {describe_accepted()}"
        )
    if not path.is_dir():
        raise DataError(f"{path} is neither a file nor a folder. {describe_accepted()}")
    cifar = find_cifar_folder(path)
    if cifar is not None:
        return read_cifar(cifar)
    if find_idx_files(path):
        return read_idx_folder(path, test_fraction=fraction, split_seed=split_seed)
    return read_image_folder(
        path,
        test_fraction=fraction,
        split_seed=split_seed,
        skip_bad_files=skip_bad_files,
        image_size=size,
    )


def load_dataset(
    spec: str,
    *,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    skip_bad_files: bool = False,
    image_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset into memory as training and test sets.

    Args:
        spec: a dataset name or path (see :func:`describe_accepted`).
        test_fraction: share of a labelled dataset without an official split that is held out
            for evaluation, in (0, 1); the split is stratified by class.
        split_seed: seed of that split; the same seed always gives the same split.
        skip_bad_files: skip unreadable image files (listed in ``DatasetSplits.skipped``) instead
            of failing.
        image_size: resize every image file to ``image_size`` x ``image_size`` (shorter side, then
            centre crop, bilinear); needed when the images of a folder or archive differ in
            size. Applies to every source (image files are resized as they are decoded).

    Returns:
        :class:`DatasetSplits` with uint8 (N, C, H, W) images held in memory, or, for image
        folders, archives and shards read before with the same settings, mapped from the
        decoded-image cache (:mod:`contrastlab.data.decoded_cache`).

    Raises:
        DataError: for an unknown name, a missing path or any problem with the data.
    """
    fraction = check_test_fraction(test_fraction)
    size = _check_image_size(image_size)
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise DataError(f"no dataset given ({spec!r}). {describe_accepted()}")
    text = str(spec).strip()

    def read() -> DatasetSplits:
        splits = _read(text, fraction, split_seed, skip_bad_files, size)
        splits.train = _resize(splits.train, size)
        if splits.test is not None:
            splits.test = _resize(splits.test, size)
        return splits

    paths = _decoded_sources(text)
    if paths is None:
        return read()
    settings = {"test_fraction": fraction, "split_seed": split_seed,
                "skip_bad_files": skip_bad_files, "image_size": size}
    return cached_splits(paths, settings, text, read)


def _decoded_sources(text: str) -> list[Path] | None:
    """The files a spec's images are decoded from (an image folder, an archive, a shard
    set), whose decoded images are worth keeping (:mod:`contrastlab.data.decoded_cache`); None
    for names and the sources that are cheap to read again (CIFAR batches, IDX, ``.npz``)."""
    if text.lower() in _DIGITS_NAMES or text.lower() in _FASHION_NAMES:
        return None
    shards = find_shard_sets(text)
    if shards is not None:
        train, test = shards
        return [*train.paths, *([] if test is None else test.paths)]
    path = Path(text).expanduser()
    if path.is_file():
        return [path] if is_archive_name(path) else None
    if not path.is_dir() or find_cifar_folder(path) is not None or find_idx_files(path):
        return None
    return [path]
