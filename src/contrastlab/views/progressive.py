"""Progressive resizing: views that start small and grow to the full size during training.

Small views cost a fraction of full-size ones (the encoder's work grows with the number of
pixels), so the first part of a short budget covers several times more images; the last part
trains at the full size, the size evaluation uses. The size follows the share of the schedule
done (steps, or seconds under a time budget), as FFCV's and fast.ai's progressive resizing do:

    size(p) = min_size                                          for p <= start
            = min_size + floor_4((full - min_size) (p - start) / (end - start))   between
            = full                                              for p >= end

rounded down to a multiple of 4 pixels so that few distinct sizes occur (each size is its own
batch shape). Resume is exact: the size is a function of the checkpointed progress.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from contrastlab.errors import ConfigError
from contrastlab.views.recipes import AugmentedViews

SIZE_STEP = 4


class ProgressiveViews:
    """:class:`AugmentedViews` whose output size grows with training progress.

    Args:
        make: builds the views of one output size (cached per size).
        full_size: the size at the end of the ramp (the run's image size).
        min_size: the size at the start (4 <= min_size <= full_size).
        ramp: (start, end) shares of the schedule over which the size grows.
    """

    def __init__(self, make: Callable[[int], AugmentedViews], full_size: int, min_size: int,
                 ramp: tuple[float, float]) -> None:
        if not 4 <= min_size <= full_size:
            raise ConfigError(
                f"min_view_size {min_size} must be in 4..{full_size} (the image size); "
                "progressive resizing starts smaller than the images"
            )
        self.make, self.full_size, self.min_size = make, full_size, min_size
        self.start, self.end = ramp
        self.cache: dict[int, AugmentedViews] = {}

    def size_at(self, progress: float) -> int:
        """The view size at ``progress`` (share of the schedule done)."""
        if progress >= self.end:
            return self.full_size
        if progress <= self.start:
            return self.min_size
        share = (progress - self.start) / max(self.end - self.start, 1e-12)
        grown = int((self.full_size - self.min_size) * share) // SIZE_STEP * SIZE_STEP
        return min(self.full_size, self.min_size + grown)

    def at(self, progress: float) -> AugmentedViews:
        """The views to use at ``progress``."""
        size = self.size_at(progress)
        if size not in self.cache:
            self.cache[size] = self.make(size)
        return self.cache[size]

    @property
    def config(self):  # noqa: ANN201 - the augmentation settings, as AugmentedViews.config
        return self.at(1.0).config

    @property
    def view_configs(self):  # noqa: ANN201 - as AugmentedViews.view_configs
        return self.at(1.0).view_configs

    @property
    def num_views(self) -> int:
        return self.at(1.0).num_views

    def __call__(self, images: Tensor, generator: torch.Generator | None = None, *,
                 global_batch: int | None = None, offset: int = 0) -> list[Tensor]:
        """Full-size views (the end of the schedule); the trainer uses :meth:`at`."""
        return self.at(1.0)(images, generator, global_batch=global_batch, offset=offset)

    def __repr__(self) -> str:
        return (f"ProgressiveViews({self.min_size} -> {self.full_size} px over "
                f"{self.start:g}-{self.end:g} of the schedule)")


__all__ = ["SIZE_STEP", "ProgressiveViews"]
