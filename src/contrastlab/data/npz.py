"""Reading images from a numpy ``.npz`` file.

Accepted fields (loaded with ``allow_pickle=False``, so the file can hold no code):

* ``x``: uint8 images (N, H, W) or (N, H, W, C) with C in {1, 3}; optional ``y``: N integer labels
  (class indices, 0 <= y < 2**20). Labelled data is split with ``test_fraction`` /
  ``split_seed``; without ``y`` it is unlabeled.
* ``x_train``, ``y_train``, ``x_test``, ``y_test``: an official split (both label fields needed).
  ``x_train`` alone (optionally with ``y_train``) is read like ``x``.
* optional ``classes``: class names (strings) indexed by label; otherwise "0".."K-1".
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.split import make_dataset, official_splits, split_dataset
from contrastlab.errors import DataError

#: the largest number of classes (labels 0..MAX_CLASSES-1): a label is a class index, and a
#: class name is made for every index up to the largest label
MAX_CLASSES = 2**20


def _images(path: Path, field: str, array: np.ndarray) -> np.ndarray:
    """Check one image field and return it as contiguous uint8 (N, C, H, W)."""
    if array.dtype != np.uint8:
        raise DataError(
            f"{path}: field {field!r} has dtype {array.dtype}; images must be uint8 (0..255), "
            f"e.g. save np.clip(x * 255, 0, 255).astype(np.uint8)"
        )
    if array.ndim == 3:
        images = array[:, None]
    elif array.ndim == 4 and array.shape[3] in (1, 3):
        images = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{path}: field {field!r} has shape {array.shape}; images must be (N, H, W) or "
            "(N, H, W, C) with C = 1 or 3 (channels last)"
        )
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise DataError(f"{path}: field {field!r} holds no images (shape {array.shape})")
    return np.ascontiguousarray(images)


def _labels(path: Path, field: str, array: np.ndarray, count: int, x_field: str) -> np.ndarray:
    """Check one label field (one non-negative integer per image) and return it as int64."""
    if array.ndim != 1 or array.shape[0] != count:
        raise DataError(
            f"{path}: field {field!r} has shape {array.shape}; it needs one label per image of "
            f"{x_field!r}, i.e. shape ({count},)"
        )
    if array.dtype.kind not in "iu":
        raise DataError(
            f"{path}: field {field!r} has dtype {array.dtype}; labels must be integers 0..K-1"
        )
    if array.size and int(array.min()) < 0:
        raise DataError(f"{path}: field {field!r} holds negative label {int(array.min())}")
    if array.size and int(array.max()) >= MAX_CLASSES:
        raise DataError(
            f"{path}: field {field!r} holds label {int(array.max())}; labels are class indices "
            f"0..K-1 with at most {MAX_CLASSES:,} classes. Renumber them, e.g. "
            "y = numpy.unique(y, return_inverse=True)[1]"
        )
    return array.astype(np.int64)


def _classes(path: Path, fields: dict[str, np.ndarray], labels: list[np.ndarray]) -> list[str]:
    """Class names: the ``classes`` field when present, else "0".."K-1"."""
    top = max((int(y.max()) for y in labels if y.size), default=-1)
    if "classes" not in fields:
        return [str(i) for i in range(top + 1)]
    names = fields["classes"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"{path}: field 'classes' must be a 1-D array of strings, got {names.dtype}"
        )
    out = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    if top >= len(out):
        raise DataError(
            f"{path}: a label is {top} but field 'classes' names only {len(out)} classes"
        )
    return out


def _part(
    path: Path, fields: dict[str, np.ndarray], x_field: str, y_field: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images ``x_field`` and, when present, labels ``y_field``."""
    images = _images(path, x_field, fields[x_field])
    labels = None
    if y_field in fields:
        labels = _labels(path, y_field, fields[y_field], len(images), x_field)
    return images, labels


def _dataset(
    images: np.ndarray, labels: np.ndarray | None, classes: list[str] | None, name: str
) -> ImageDataset:
    """Wrap arrays into an :class:`ImageDataset` with ``"<name>:<index>"`` ids."""
    ids = [f"{name}:{i}" for i in range(len(images))]
    return make_dataset(images, labels, classes if labels is not None else None, ids, name)


def read_npz(path: Path, *, test_fraction: float, split_seed: int) -> DatasetSplits:
    """Read an ``.npz`` file (see the module docstring for its fields)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {path} as an .npz file ({exc.__class__.__name__}: {exc}); save it with "
            "numpy.savez(path, x=images, y=labels) (object arrays are not allowed)"
        ) from exc
    stem = path.stem
    if "x_train" in fields and "x_test" in fields and "x" not in fields:
        for needed in ("y_train", "y_test"):
            if needed not in fields:
                raise DataError(
                    f"{path}: has x_train and x_test but no field {needed!r}; an official split "
                    "needs labels for both (or store unlabeled images as 'x')"
                )
        train_x, train_y = _part(path, fields, "x_train", "y_train")
        test_x, test_y = _part(path, fields, "x_test", "y_test")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(
                f"{path}: x_train images are {train_x.shape[1:]} (C, H, W) but x_test images are "
                f"{test_x.shape[1:]}; both must have the same shape"
            )
        assert train_y is not None and test_y is not None
        classes = _classes(path, fields, [train_y, test_y])
        return official_splits(
            _dataset(train_x, train_y, classes, f"{stem} (train)"),
            _dataset(test_x, test_y, classes, f"{stem} (test)"),
        )
    if "x" in fields:
        x_field, y_field = "x", "y"
    elif "x_train" in fields:
        x_field, y_field = "x_train", "y_train"
    else:
        present = ", ".join(sorted(fields)) or "none"
        raise DataError(
            f"{path} has no field 'x' (fields: {present}); store images as 'x' with optional "
            "labels 'y', or as x_train/y_train/x_test/y_test"
        )
    images, labels = _part(path, fields, x_field, y_field)
    classes = None if labels is None else _classes(path, fields, [labels])
    data = _dataset(images, labels, classes, stem)
    return split_dataset(data, test_fraction=test_fraction, split_seed=split_seed)
