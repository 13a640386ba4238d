"""View recipes: the augmented views each method family trains on, and the evaluation transform.

* ``AugmentedViews``: ``num_views`` independent ``BatchAugment`` views per image (SimCLR defaults).
* ``MultiCropViews``: global views plus smaller local views (SwAV, DINO multi-crop).
* ``EvalTransform``: deterministic resize + normalisation for evaluation and feature extraction.
* ``channel_stats``: per-channel mean/std of a uint8 dataset, for the normalisation constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.errors import ConfigError
from contrastlab.views.augment import (
    AugmentConfig,
    BatchAugment,
    ViewParams,
    check_images,
    check_normalization,
)
from contrastlab.views.functional import normalize, to_float

__all__ = ["EvalTransform", "MultiCropViews", "AugmentedViews", "channel_stats"]


class AugmentedViews:
    """``num_views`` independently augmented views of every image (SimCLR, Chen et al. 2020).

    The default ``AugmentConfig`` is the paper's CIFAR-10 recipe: random resized crop with area
    scale 0.08-1 and ratio 3/4-4/3, horizontal flip with p=0.5, colour jitter of strength 0.5
    (brightness/contrast/saturation 0.4, hue 0.1) with p=0.8, greyscale with p=0.2, Gaussian blur
    with p=0.5 only for outputs of at least 64 px (so off for 32 px CIFAR). For 1-channel images
    saturation, hue and greyscale are skipped.

    Asymmetric views (BYOL, Grill et al. 2020, Table 6: view 1 always blurred and never
    solarised, view 2 blurred with p = 0.1 and solarised with p = 0.2): ``view_configs`` gives
    one augmentation per view instead of ``config`` for all. The random parameters are drawn
    in the same order and amount either way, so only the probabilities change.

    Args:
        output_size: side of the square views in pixels.
        channels: image channels, 1 or 3.
        mean, std: per-channel normalisation constants in [0, 1] units.
        config: augmentation settings; ``None`` for the defaults.
        num_views: number of views per image, >= 1.
        view_configs: one augmentation per view (``num_views`` of them), replacing ``config``
            view by view; None: ``config`` for every view.

    Raises:
        ConfigError: for invalid arguments.
    """

    def __init__(
        self,
        output_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: AugmentConfig | None = None,
        num_views: int = 2,
        view_configs: Sequence[AugmentConfig] | None = None,
    ) -> None:
        if not isinstance(num_views, int) or isinstance(num_views, bool) or num_views < 1:
            raise ConfigError(f"num_views = {num_views!r} is not allowed; allowed: an integer >= 1")
        self.config = config if config is not None else AugmentConfig()
        self.augment = BatchAugment(self.config, output_size, channels, mean, std)
        self.view_configs = _check_view_configs(view_configs, num_views)
        self.view_augments = _augments_per_view(self.augment, self.view_configs, num_views,
                                                output_size, channels, mean, std)
        self.num_views = num_views

    def __repr__(self) -> str:
        if self.view_configs is not None:
            return f"AugmentedViews({self.view_augments!r})"
        return f"AugmentedViews({self.augment!r}, num_views={self.num_views})"

    @property
    def output_size(self) -> int:
        return self.augment.output_size

    def at(self, progress: float) -> AugmentedViews:
        """The views to use at ``progress`` of the schedule: these (their size is fixed)."""
        return self

    def __call__(self, images: Tensor, generator: torch.Generator | None = None, *,
                 global_batch: int | None = None, offset: int = 0) -> list[Tensor]:
        """Return ``num_views`` float32 views (N, C, out, out), each normalised.

        Views are computed on ``images.device``; their random parameters are drawn in turn (view
        0 first) from the CPU ``generator``, so a seed gives the same views on any device.

        Distributed training: with ``global_batch`` set, ``images`` are rows ``offset ..
        offset + N - 1`` of a global batch of that size; the parameters of the whole global batch
        are drawn (the generator advances as in one process) and only this slice is augmented,
        so the result equals those rows of the full batch's views bit for bit.
        """
        check_images(images, self.augment.channels, "AugmentedViews")
        x = to_float(images)  # converted once, shared by every view
        n, _, h, w = x.shape
        total = _check_slice(n, global_batch, offset)
        return [
            augment.apply(
                x, _slice_params(augment.sample_params(total, h, w, generator), n, total, offset))
            for augment in self.view_augments
        ]


class MultiCropViews:
    """Multi-crop (Caron et al. 2020, SwAV Sec. 3.2; also DINO): ``num_global`` views at
    ``global_size`` px with the configured crop scale, then ``num_local`` views at ``local_size``
    px cropped from a smaller area (``local_crop_scale``), same photometric augmentations.

    The returned list holds the global views first, then the local ones; every view of a group has
    the same size, so a method can encode each group as one batch.

    Args:
        global_size, local_size: sides of the global and local views in pixels.
        channels, mean, std: as for :class:`AugmentedViews`.
        config: augmentation settings of the global views (``None``: defaults).
        num_global: global views per image (>= 1).
        num_local: local views per image (>= 0).
        local_crop_scale: (min, max) area fraction of the local crops.
        global_view_configs: one augmentation per global view (asymmetric global views, as
            DINO's: see :class:`AugmentedViews`); the local views keep ``config``.
    """

    def __init__(
        self,
        global_size: int,
        local_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        config: AugmentConfig | None = None,
        num_global: int = 2,
        num_local: int = 6,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        global_view_configs: Sequence[AugmentConfig] | None = None,
    ) -> None:
        if num_global < 1 or num_local < 0:
            raise ConfigError(
                f"multi-crop needs num_global >= 1 and num_local >= 0, got {num_global} and "
                f"{num_local}"
            )
        self.config = config if config is not None else AugmentConfig()
        local_config = dataclasses.replace(self.config, crop_scale=tuple(local_crop_scale))
        self.global_augment = BatchAugment(self.config, global_size, channels, mean, std)
        self.local_augment = BatchAugment(local_config, local_size, channels, mean, std)
        self.view_configs = _check_view_configs(global_view_configs, num_global)
        self.global_augments = _augments_per_view(self.global_augment, self.view_configs,
                                                  num_global, global_size, channels, mean, std)
        self.num_global = num_global
        self.num_local = num_local
        self.num_views = num_global + num_local

    def __repr__(self) -> str:
        return (f"MultiCropViews({self.num_global} x {self.global_augment!r}, "
                f"{self.num_local} x {self.local_augment!r})")

    @property
    def output_size(self) -> int:
        return self.global_augment.output_size

    def at(self, progress: float) -> MultiCropViews:
        """The views to use at ``progress`` of the schedule: these (their sizes are fixed)."""
        return self

    def __call__(self, images: Tensor, generator: torch.Generator | None = None, *,
                 global_batch: int | None = None, offset: int = 0) -> list[Tensor]:
        """Global views then local views, float32, normalised, on ``images.device``.

        ``global_batch`` and ``offset``: this process's slice of a global batch, as for
        :class:`AugmentedViews`.
        """
        check_images(images, self.global_augment.channels, "MultiCropViews")
        x = to_float(images)
        n, _, h, w = x.shape
        total = _check_slice(n, global_batch, offset)
        views = []
        for augment in [*self.global_augments, *[self.local_augment] * self.num_local]:
            params = augment.sample_params(total, h, w, generator)
            views.append(augment.apply(x, _slice_params(params, n, total, offset)))
        return views


def _check_view_configs(view_configs: Sequence[AugmentConfig] | None,
                        num_views: int) -> list[AugmentConfig] | None:
    if view_configs is None:
        return None
    if len(view_configs) != num_views:
        raise ConfigError(f"{len(view_configs)} per-view augmentations given for {num_views} "
                          "views; give one per view")
    return list(view_configs)


def _augments_per_view(shared: BatchAugment, view_configs: list[AugmentConfig] | None,
                       num_views: int, output_size: int, channels: int,
                       mean: Sequence[float], std: Sequence[float]) -> list[BatchAugment]:
    """The augmentation of each view: ``shared`` for all, or one per view config."""
    if view_configs is None:
        return [shared] * num_views
    return [BatchAugment(c, output_size, channels, mean, std) for c in view_configs]


def _check_slice(n: int, global_batch: int | None, offset: int) -> int:
    """The number of samples whose parameters are drawn: ``global_batch`` (or ``n``)."""
    if global_batch is None:
        if offset != 0:
            raise ValueError(f"offset {offset} given without global_batch")
        return n
    if not 0 <= offset <= offset + n <= global_batch:
        raise ValueError(
            f"rows {offset}..{offset + n - 1} are not inside a global batch of {global_batch}"
        )
    return global_batch


def _slice_params(params: ViewParams, n: int, total: int, offset: int) -> ViewParams:
    return params if n == total else params.select(offset, offset + n)


class EvalTransform:
    """Deterministic evaluation transform: resize (if needed) and normalise.

    Images whose size is not ``output_size`` x ``output_size`` are resized to it with bilinear
    interpolation and antialiasing (``F.interpolate(..., antialias=True)``; the aspect ratio is
    not kept). Then ``(x / 255 - mean[c]) / std[c]``.

    Args:
        output_size: side of the square outputs in pixels.
        channels: image channels, 1 or 3.
        mean, std: per-channel normalisation constants in [0, 1] units.
    """

    def __init__(
        self, output_size: int, channels: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.mean, self.std = check_normalization(output_size, channels, mean, std)
        self.output_size = output_size
        self.channels = channels

    def __repr__(self) -> str:
        return (
            f"EvalTransform(output_size={self.output_size}, channels={self.channels}, "
            f"mean={self.mean}, std={self.std})"
        )

    def __call__(self, images: Tensor) -> Tensor:
        """Float32 (N, C, out, out) normalised images on ``images.device``."""
        check_images(images, self.channels, "EvalTransform")
        x = to_float(images)
        size = (self.output_size, self.output_size)
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)
        return normalize(x, self.mean, self.std)


def channel_stats(
    images: Tensor, chunk_size: int = 1024
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images, in [0, 1] units.

    Computed exactly from per-channel histograms of the 256 pixel values, accumulated over
    chunks of ``chunk_size`` images (so memory stays bounded): ``mean_c = sum_v v n_c(v) /
    (255 N_c)`` and ``std_c = sqrt(sum_v v^2 n_c(v) / (255^2 N_c) - mean_c^2)``.

    Args:
        images: uint8 (N, C, H, W), N >= 1, on any device.
        chunk_size: images per chunk.

    Returns:
        ``(mean, std)``, tuples of C floats.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            "channel_stats: expected uint8 images (N, C, H, W), got "
            f"{getattr(images, 'dtype', type(images))} "
            f"{tuple(getattr(images, 'shape', ()))}"
        )
    n, c = images.shape[:2]
    if n == 0 or images.numel() == 0:
        raise ValueError("channel_stats: no images to compute statistics from")
    if chunk_size < 1:
        raise ValueError(f"channel_stats: chunk_size must be >= 1, got {chunk_size}")
    counts = torch.zeros(c * 256, dtype=torch.int64, device=images.device)
    offsets = (torch.arange(c, device=images.device) * 256).view(1, c, 1, 1)
    for start in range(0, n, chunk_size):
        chunk = images[start : start + chunk_size].to(torch.int64) + offsets
        counts += torch.bincount(chunk.reshape(-1), minlength=c * 256)
    hist = counts.view(c, 256).to(torch.float64).cpu()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = hist.sum(dim=1)
    mean = (hist * values).sum(dim=1) / total
    var = ((hist * values**2).sum(dim=1) / total - mean**2).clamp(min=0.0)
    return tuple(mean.tolist()), tuple(var.sqrt().tolist())
