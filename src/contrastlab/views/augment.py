"""Configurable batched augmentation pipeline: crop+flip, colour jitter, greyscale, blur, solarise.

``BatchAugment`` turns a uint8 batch (N, C, H, W) into one normalised float32 view per image.
All random parameters of a call are drawn at once on the CPU from the ``torch.Generator`` passed
in (so a seed gives the same views on CPU and CUDA, and the generator state can be saved with a
checkpoint), moved to the images' device in one transfer, and applied with batched kernels.

Pipeline (the SimCLR order), each step with its own per-sample random parameters:

1. random resized crop to ``output_size`` + horizontal flip with ``flip_p`` (one ``grid_sample``);
2. with ``jitter_p``: brightness, contrast, saturation and hue jitter in a random order per sample;
3. with ``grey_p``: greyscale;
4. with ``blur_p``: Gaussian blur, only when ``output_size >= blur_min_size``;
5. with ``solarize_p``: solarisation;
6. per-channel normalisation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from contrastlab.errors import ConfigError
from contrastlab.views.functional import (
    JitterPlan,
    apply_color_jitter,
    gaussian_blur,
    grayscale,
    make_jitter_plan,
    move_tensors,
    normalize,
    resized_crop_flip,
    sample_crop_boxes,
    solarize,
    to_float,
)
from contrastlab.views.settings import MAX_JITTER_STRENGTH, AugmentConfig

__all__ = ["MAX_JITTER_STRENGTH", "AugmentConfig", "BatchAugment", "ViewParams", "check_images",
           "check_normalization"]

@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one view of a batch of N images.

    Attributes:
        boxes: (N, 4) float32 crop boxes ``(top, left, height, width)`` in source pixels.
        flip: (N,) bool, mirrored samples.
        jitter: colour-jitter plan (selected samples, op order and factors).
        grey_index: (G,) int64, samples converted to greyscale.
        blur_index: (B,) int64, blurred samples; ``blur_sigma``: (B,) their sigmas.
        solarize_index: (S,) int64, solarised samples.
        angle: (N,) float32 rotation of each crop box in radians, or None when the recipe
            does not rotate.
    """

    boxes: Tensor
    flip: Tensor
    jitter: JitterPlan
    grey_index: Tensor
    blur_index: Tensor
    blur_sigma: Tensor
    solarize_index: Tensor
    angle: Tensor | None = None

    def to(self, device: torch.device | str) -> ViewParams:
        """These parameters on ``device`` (all tensors in one transfer)."""
        moved = move_tensors(self, device)
        assert isinstance(moved, ViewParams)
        return moved

    def select(self, start: int, stop: int) -> ViewParams:
        """The parameters of samples ``start .. stop - 1`` of the batch, re-based to 0.

        Applied to those images alone they give, bit for bit, the same rows as the full
        parameters applied to the whole batch (distributed training: every rank draws the
        global batch's parameters from the shared generator and augments its own slice).
        """
        n = self.flip.shape[0]
        if not 0 <= start <= stop <= n:
            raise ValueError(f"cannot select samples {start}..{stop} of a batch of {n}")

        def rebase(index: Tensor) -> tuple[Tensor, Tensor]:
            inside = (index >= start) & (index < stop)
            return index[inside] - start, inside

        grey, _ = rebase(self.grey_index)
        blur, blur_inside = rebase(self.blur_index)
        solarize, _ = rebase(self.solarize_index)
        return ViewParams(
            boxes=self.boxes[start:stop],
            flip=self.flip[start:stop],
            jitter=self.jitter.select(start, stop),
            grey_index=grey,
            blur_index=blur,
            blur_sigma=self.blur_sigma[blur_inside],
            solarize_index=solarize,
            angle=None if self.angle is None else self.angle[start:stop],
        )


def check_images(images: Tensor, channels: int, who: str) -> None:
    """Raise ValueError unless ``images`` is a uint8 (N, channels, H, W) tensor."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(
            f"{who}: expected uint8 images of shape (N, {channels}, H, W), got {images.dtype} "
            f"with shape {tuple(images.shape)}"
        )


def check_normalization(
    output_size: int, channels: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate the output size, channel count and normalisation constants.

    Returns:
        ``(mean, std)`` as tuples of floats.

    Raises:
        ConfigError: naming the offending argument, its value and the allowed range.
    """
    if not isinstance(output_size, int) or isinstance(output_size, bool) or output_size < 1:
        raise ConfigError(f"output_size = {output_size!r} is not allowed; allowed: an integer >= 1")
    if channels not in (1, 3):
        raise ConfigError(f"channels = {channels!r} is not allowed; allowed: 1 or 3")
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if len(mean_t) != channels:
        raise ConfigError(
            f"mean = {tuple(mean)!r} has {len(mean_t)} values; allowed: one per "
            f"channel ({channels})"
        )
    if len(std_t) != channels:
        raise ConfigError(
            f"std = {tuple(std)!r} has {len(std_t)} values; allowed: one per channel ({channels})"
        )
    if not all(math.isfinite(m) for m in mean_t):
        raise ConfigError(f"mean = {mean_t!r} is not finite; allowed: finite numbers")
    if not all(math.isfinite(s) and s > 0 for s in std_t):
        raise ConfigError(f"std = {std_t!r} is out of range; allowed: finite numbers > 0")
    return mean_t, std_t


class BatchAugment:
    """One random view per image of a uint8 batch, normalised (see the module docstring).

    Args:
        config: augmentation settings.
        output_size: side of the square output views, in pixels.
        channels: number of image channels, 1 or 3. For 1-channel images saturation, hue and
            greyscale are skipped.
        mean, std: per-channel normalisation constants in [0, 1] units.

    Raises:
        ConfigError: for an invalid output size, channel count, mean or std.
    """

    def __init__(
        self,
        config: AugmentConfig,
        output_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if not isinstance(config, AugmentConfig):
            raise ConfigError(f"config = {config!r} is not an AugmentConfig")
        self.mean, self.std = check_normalization(output_size, channels, mean, std)
        self.config = config
        self.output_size = output_size
        self.channels = channels
        colour = channels == 3
        self.jitter_enabled: tuple[bool, bool, bool, bool] = (
            config.brightness > 0,
            config.contrast > 0,
            colour and config.saturation > 0,
            colour and config.hue > 0,
        )
        self.blur_enabled = config.blur_p > 0 and output_size >= config.blur_min_size
        self.blur_kernel_size = max(3, int(0.1 * output_size) // 2 * 2 + 1)
        self._local = threading.local()  # per-thread scratch buffers, see _workspace

    def _workspace(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Two scratch tensors shaped like ``like``, kept per thread and reused across calls.

        Buffers for at most two batch shapes are kept (2 x the size of one view each).
        """
        cache: dict[tuple, tuple[Tensor, Tensor]] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in cache:
            if len(cache) >= 2:  # e.g. full batches and the last, smaller one of an epoch
                del cache[next(iter(cache))]
            cache[key] = (torch.empty_like(like), torch.empty_like(like))
        return cache[key]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (
            f"BatchAugment({self.config!r}, output_size={self.output_size}, "
            f"channels={self.channels}, mean={self.mean}, std={self.std})"
        )

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> ViewParams:
        """Draw the random parameters of one view of ``n`` images of size (height, width).

        Everything is drawn on the CPU from ``generator`` in a fixed order (crop boxes, then one
        (n, 14) uniform draw for the rest), so the result depends only on the generator state.
        """
        cfg = self.config
        boxes = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, generator)
        u = torch.rand(n, 14, generator=generator)
        flip = u[:, 0] < cfg.flip_p
        jitter_on = u[:, 1] < cfg.jitter_p
        amounts = torch.tensor([cfg.brightness, cfg.contrast, cfg.saturation])
        low = (1.0 - amounts).clamp(min=0.0)
        factors = torch.empty(n, 4)
        factors[:, :3] = low + (1.0 + amounts - low) * u[:, 2:5]
        factors[:, 3] = cfg.hue * (2.0 * u[:, 5] - 1.0)
        order = torch.argsort(u[:, 6:10], dim=1)  # a uniformly random permutation per sample
        grey_on = u[:, 10] < cfg.grey_p
        blur_on = u[:, 11] < cfg.blur_p
        lo, hi = cfg.blur_sigma
        sigma = lo + (hi - lo) * u[:, 12]
        solarize_on = u[:, 13] < cfg.solarize_p
        if not any(self.jitter_enabled):
            jitter_on = torch.zeros_like(jitter_on)
        if self.channels == 1:
            grey_on = torch.zeros_like(grey_on)
        if not self.blur_enabled:
            blur_on = torch.zeros_like(blur_on)
        blur_index = blur_on.nonzero().squeeze(1)
        angle = None
        if cfg.rotation > 0:  # drawn last: recipes without rotation keep their random stream
            turn = torch.rand(n, generator=generator).mul_(2.0).sub_(1.0)
            angle = turn.mul_(math.radians(cfg.rotation))
        return ViewParams(
            boxes=boxes,
            flip=flip,
            jitter=make_jitter_plan(factors, order, jitter_on),
            grey_index=grey_on.nonzero().squeeze(1),
            blur_index=blur_index,
            blur_sigma=sigma[blur_index],
            solarize_index=solarize_on.nonzero().squeeze(1),
            angle=angle,
        )

    def apply(self, x: Tensor, params: ViewParams) -> Tensor:
        """Apply one view's parameters to float images ``x`` (N, C, H, W) in [0, 1].

        ``x`` is not modified. Returns the normalised float32 view (N, C, out, out).
        """
        params = params.to(x.device)
        cfg = self.config
        view = resized_crop_flip(x, params.boxes, params.flip, self.output_size, params.angle)
        if params.jitter.num_selected and any(self.jitter_enabled):
            # CPU: reuse scratch buffers (fresh ones page-fault on every call); CUDA's caching
            # allocator already reuses memory, so no batch-sized buffers are held there.
            workspace = self._workspace(view) if view.device.type == "cpu" else None
            apply_color_jitter(
                view, params.jitter, self.jitter_enabled, out=view, workspace=workspace
            )
        if params.grey_index.numel():
            idx = params.grey_index
            view.index_copy_(0, idx, grayscale(view.index_select(0, idx)))
        if params.blur_index.numel():
            idx = params.blur_index
            blurred = gaussian_blur(
                view.index_select(0, idx), params.blur_sigma, self.blur_kernel_size
            )
            view.index_copy_(0, idx, blurred)
        if params.solarize_index.numel():
            idx = params.solarize_index
            view.index_copy_(0, idx, solarize(view.index_select(0, idx), cfg.solarize_threshold))
        return normalize(view, self.mean, self.std, inplace=True)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One augmented, normalised float32 view (N, C, out, out) of uint8 ``images``.

        The view is computed on ``images.device``; the parameters come from the CPU
        ``generator``.
        """
        check_images(images, self.channels, "BatchAugment")
        x = to_float(images)
        params = self.sample_params(x.shape[0], x.shape[2], x.shape[3], generator)
        return self.apply(x, params)
