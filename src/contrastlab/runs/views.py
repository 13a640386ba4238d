"""The views a run trains on, made from its configuration."""

from __future__ import annotations

from contrastlab.config import TrainConfig
from contrastlab.errors import ConfigError
from contrastlab.methods import method_class
from contrastlab.views import AugmentedViews, MultiCropViews
from contrastlab.views.progressive import ProgressiveViews


def num_local_crops(config: TrainConfig) -> int:
    """Local (small) multi-crop views per image: the configured number or the method's default."""
    if config.views.num_local_crops is not None:
        return config.views.num_local_crops
    return method_class(config.method.name).default_local_crops


def build_views(config: TrainConfig, image_size: int, channels: int,
                mean: tuple[float, ...], std: tuple[float, ...]
                ) -> AugmentedViews | MultiCropViews | ProgressiveViews:
    """The views the method trains on: its global views (the ``num_views`` setting for a method
    that has one, e.g. SupCon, else the method's number; each with its own blur and
    solarisation probabilities when ``blur_p_views`` / ``solarize_p_views`` are set), plus local
    multi-crop views when the method uses them; growing from ``min_view_size`` when progressive
    resizing is on. The trainer calls ``views.at(progress)`` for each step's views."""
    augment = config.views.augment()
    per_view = config.views.view_augments()  # asymmetric views (BYOL), else None
    num_global = method_class(config.method.name).views_per_image(config.method)
    num_local = num_local_crops(config)
    if num_local == 0:
        def make(size: int) -> AugmentedViews:
            return AugmentedViews(size, channels, mean, std, augment, num_views=num_global,
                                  view_configs=per_view)

        if config.views.min_view_size is not None:
            return ProgressiveViews(make, image_size, config.views.min_view_size,
                                    config.views.view_size_ramp)
        return make(image_size)
    local_size = config.views.local_crop_size or max(4, round(image_size * 3 / 7))
    if local_size > image_size:
        raise ConfigError(
            f"local_crop_size {local_size} is larger than the image size {image_size}; local "
            "crops must be smaller than the global views"
        )
    return MultiCropViews(image_size, local_size, channels, mean, std, augment,
                          num_global=num_global, num_local=num_local,
                          local_crop_scale=config.views.local_crop_scale,
                          global_view_configs=per_view)


__all__ = ["build_views", "num_local_crops"]
