"""The in-memory image dataset every reader produces.

Images are decoded once into one contiguous uint8 tensor of shape (N, C, H, W); labels, when known,
are an int64 tensor of shape (N,). Augmentation happens later, batched, on the training device
(see ``contrastlab.views``), so a dataset is only storage and indexing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ImageSource(Protocol):
    """What frozen-feature extraction needs of a dataset: its size, its name and its images in
    order, batch by batch. :class:`ImageDataset` (in memory) and
    :class:`contrastlab.data.streamed_images.StreamedImages` (decoded from shards in one pass)
    are both image sources."""

    name: str

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, workers: int | None = None) -> Iterator[Tensor]:
        """uint8 (n, C, H, W) batches of at most ``batch_size`` images, in dataset order."""
        ...


@dataclass
class ImageDataset:
    """Decoded images with optional labels.

    Attributes:
        images: uint8 tensor (N, C, H, W), C in {1, 3}.
        labels: int64 tensor (N,) or None for unlabeled data.
        classes: class names indexed by label, or None.
        ids: one identifier per image (file path, or ``"<name>:<index>"``).
        name: a short description of the source, used in logs and errors.
    """

    images: Tensor
    labels: Tensor | None
    classes: list[str] | None
    ids: list[str]
    name: str = "dataset"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"{self.name}: images must be a uint8 tensor (N, C, H, W), got "
                f"{self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(
                f"{self.name}: {n} images but labels of shape {tuple(self.labels.shape)}"
            )
        if len(self.ids) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.ids)} ids")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int | None]:
        label = None if self.labels is None else int(self.labels[index])
        return self.images[index], label

    def batches(self, batch_size: int, workers: int | None = None) -> Iterator[Tensor]:
        """Consecutive slices of :attr:`images` (``workers`` is ignored: nothing is decoded)."""
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        if self.labels is not None and len(self.labels) > 0:
            return int(self.labels.max()) + 1
        return None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def subset(self, indices: Sequence[int] | Tensor) -> ImageDataset:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(
            images=self.images[index].contiguous(),
            labels=None if self.labels is None else self.labels[index].clone(),
            classes=self.classes,
            ids=[self.ids[i] for i in index.tolist()],
            name=self.name,
        )


@dataclass
class DatasetSplits:
    """A training set, an evaluation set (None when unlabeled) and what was skipped while reading.

    Attributes:
        train: images the method trains on.
        test: held-out labelled images for evaluation; None when the data has no labels.
        skipped: paths of unreadable files skipped under ``skip_bad_files`` (with the reason).
        official_split: True when the split came with the data (train/test folders, IDX files,
            CIFAR batches), False when it was drawn with ``test_fraction`` and ``split_seed``.
    """

    train: ImageDataset
    test: ImageDataset | None
    skipped: list[str] = field(default_factory=list)
    official_split: bool = False
