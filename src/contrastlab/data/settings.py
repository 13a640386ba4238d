"""The data's settings (the ``data:`` section of a configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastlab.settings import Settings, setting

DATA_HELP = (
    "digits (bundled), fashion-mnist, a folder of images (class sub-folders, optional train/ and "
    "test/), a .tar/.tar.gz of one, a CIFAR python-batches folder, an MNIST IDX folder, or an "
    ".npz, or WebDataset tar shards (a shard folder or a pattern such as "
    "'shards/{000000..000099}.tar')."
)


@dataclass
class DataSettings(Settings):
    """Where the images come from and how the held-out split is made."""

    section: ClassVar[str] = "data"

    source: str = setting("digits", DATA_HELP, key="data",
                          source="here: bundled with scikit-learn, no download")
    test_fraction: float = setting(0.2, "Held-out share where the data has no official split.",
                                   source="here", gt=0, lt=1)
    split_seed: int = setting(0, "Seed of the stratified train/test split.", source="here")
    skip_bad_files: bool = setting(False, "Skip unreadable images (counted) instead of failing.",
                                   source="here")
    image_size: int | None = setting(
        None, "Resize images (shorter side, centre crop) and crop views to this size; none: "
        "the data's own size.", source="the data", ge=4, must_be=">= 4 pixels")
    stream: str = setting(
        "auto", "Stream batches from tar shards or an image folder, decoded in worker "
        "processes, instead of decoding everything into memory first: on, off, or auto (on for "
        "shards; for a folder when its decoded images would take over half of the available "
        "memory).",
        source="here: data larger than memory streams", choices=("auto", "on", "off"))
    loader_workers: int | None = setting(
        None, "Worker processes decoding streamed batches (0: in the training process); none: "
        "the CPU count less one, at most 8. The batches do not depend on it.",
        source="here", ge=0)
    shuffle_buffer: int = setting(
        10_000, "Samples in the streamed shuffle buffer (sample numbers only, 8 bytes each); "
        "shard order is shuffled per epoch as well.", source="here: as WebDataset's typical "
        "buffer", ge=0)


__all__ = ["DATA_HELP", "DataSettings"]
