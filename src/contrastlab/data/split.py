"""Seeded stratified train/test splits and the assembly of :class:`DatasetSplits`.

Where a labelled dataset comes without an official split, the training and the test images are
drawn from one seeded stratified split (scikit-learn's ``train_test_split`` with ``stratify``), so
the same ``test_fraction`` and ``split_seed`` always give the same images on every machine, and
every class keeps its share of the test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.errors import DataError


def check_test_fraction(test_fraction: float) -> float:
    """Return ``test_fraction`` as a float, or raise DataError unless it lies strictly in (0, 1)."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise DataError(
            f"test_fraction must be a number between 0 and 1 (exclusive), got {test_fraction!r}"
        )
    value = float(test_fraction)
    if not 0.0 < value < 1.0:
        raise DataError(
            f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}; "
            "use e.g. 0.2 to hold out a fifth of the images for evaluation"
        )
    return value


def _as_label_array(labels: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """Labels as a 1-D int64 numpy array (DataError for other shapes or types)."""
    if isinstance(labels, torch.Tensor):
        array = labels.detach().cpu().numpy()
    else:
        array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def stratified_split(
    labels: Sequence[int] | np.ndarray | torch.Tensor, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into training and test indices, stratified by label.

    Args:
        labels: one integer label per item (sequence, numpy array or tensor).
        test_fraction: share of the items that goes to the test side, in (0, 1).
        seed: random seed; the same seed always gives the same split.

    Returns:
        ``(train_idx, test_idx)``: sorted, disjoint int64 arrays that together cover every index.

    Raises:
        DataError: for a fraction outside (0, 1), or when a class is too small to be split (each
            class needs at least two items, and the test side at least one item per class).
    """
    fraction = check_test_fraction(test_fraction)
    array = _as_label_array(labels)
    n = len(array)
    if n < 2:
        raise DataError(f"cannot split {n} labelled image(s) into a training and a test set")
    values, counts = np.unique(array, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < 2:
        raise DataError(
            f"class {int(values[smallest])} has only {int(counts[smallest])} image; a stratified "
            "train/test split needs at least 2 images in every class: add images or remove the "
            "class"
        )
    indices = np.arange(n, dtype=np.int64)
    try:
        from sklearn.model_selection import train_test_split  # 1 s to import: when needed

        train_idx, test_idx = train_test_split(
            indices, test_size=fraction, stratify=array, random_state=int(seed)
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {n} images of {len(values)} classes with test_fraction={fraction}: "
            f"{exc}. Choose a test_fraction that leaves at least one image of every class on each "
            "side"
        ) from exc
    return np.sort(train_idx).astype(np.int64), np.sort(test_idx).astype(np.int64)


def split_dataset(
    data: ImageDataset,
    *,
    test_fraction: float,
    split_seed: int,
    skipped: Sequence[str] = (),
) -> DatasetSplits:
    """Turn one dataset without an official split into :class:`DatasetSplits`.

    Unlabeled data is all training data (``test`` is None); labelled data is split with
    :func:`stratified_split`.
    """
    if len(data) == 0:
        raise DataError(f"{data.name}: the dataset holds no images")
    if data.labels is None:
        return DatasetSplits(train=data, test=None, skipped=list(skipped), official_split=False)
    train_idx, test_idx = stratified_split(data.labels, test_fraction, split_seed)
    return DatasetSplits(
        train=data.subset(torch.from_numpy(train_idx)),
        test=data.subset(torch.from_numpy(test_idx)),
        skipped=list(skipped),
        official_split=False,
    )


def official_splits(
    train: ImageDataset, test: ImageDataset, *, skipped: Sequence[str] = ()
) -> DatasetSplits:
    """Wrap a training and a test set that came with the data as :class:`DatasetSplits`."""
    because = ""
    if skipped:
        because = (f" that could be read ({len(skipped)} unreadable file(s) were skipped, e.g. "
                   f"{skipped[0]})")
    if len(train) == 0:
        raise DataError(f"{train.name}: the training set holds no images{because}")
    if len(test) == 0:
        raise DataError(f"{test.name}: the test set holds no images{because}")
    return DatasetSplits(train=train, test=test, skipped=list(skipped), official_split=True)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None,
    classes: list[str] | None,
    ids: list[str],
    name: str,
) -> ImageDataset:
    """Build an :class:`ImageDataset` from numpy arrays (images uint8 (N, C, H, W)).

    Raises:
        DataError: for images with no pixels (a reader's last line of defence).
    """
    if images.ndim != 4 or 0 in images.shape[2:]:
        raise DataError(f"{name}: images of shape {images.shape[1:]} (C, H, W) hold no pixels")
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    label_tensor = None
    if labels is not None:
        label_tensor = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    return ImageDataset(images=tensor, labels=label_tensor, classes=classes, ids=ids, name=name)
