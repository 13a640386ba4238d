"""The augmentation settings (the ``views:`` section of a configuration).

:class:`AugmentConfig` holds what one augmented view is made of (the SimCLR pipeline's knobs);
:class:`ViewSettings` adds the multi-crop views (SwAV, DINO). The defaults are the SimCLR
CIFAR-10 recipe (Chen et al. 2020, Appendix A): random resized crop with area 0.08-1 and aspect
ratio 3/4-4/3, horizontal flip with p = 0.5, colour jitter of strength 0.5 with p = 0.8, greyscale
with p = 0.2, Gaussian blur with p = 0.5 only for views of at least 64 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastlab.settings import Settings, setting

MAX_JITTER_STRENGTH = 2.5
"""Largest jitter strength: the hue range 0.2 * strength must stay within half a turn."""

_PROBABILITY = {"ge": 0, "le": 1, "note": "is a probability and "}
_UNIT_PAIR = {"gt": 0, "le": 1, "ordered": True,
              "must_be": "two numbers with 0 < min <= max <= 1"}
_POSITIVE_PAIR = {"gt": 0, "ordered": True, "must_be": "two numbers with 0 < min <= max"}


@dataclass
class AugmentConfig(Settings):
    """The settings of one augmented view: crop + flip (+ rotation), colour jitter, greyscale,
    blur, solarisation. Brightness, contrast and saturation factors are uniform in
    [max(0, 1 - 0.8 s), 1 + 0.8 s] for jitter strength s, the hue shift in [-0.2 s, 0.2 s] turns.

    Raises:
        ConfigError: for any value out of range, naming the field, the value and the range.
    """

    section: ClassVar[str] = "views"

    crop_scale: tuple[float, float] = setting(
        (0.08, 1.0), "Random resized crop: area range (min, max) of the crop.",
        source="SimCLR", **_UNIT_PAIR)
    crop_ratio: tuple[float, float] = setting(
        (3 / 4, 4 / 3), "Random resized crop: aspect-ratio range (width / height).",
        source="SimCLR", **_POSITIVE_PAIR)
    flip_p: float = setting(0.5, "Probability of a horizontal flip.", source="SimCLR",
                            **_PROBABILITY)
    jitter_strength: float = setting(
        0.5, "Colour jitter strength s (brightness, contrast, saturation 0.8 s, hue 0.2 s).",
        source="SimCLR's CIFAR-10 runs", ge=0, le=MAX_JITTER_STRENGTH)
    jitter_p: float = setting(0.8, "Probability of colour jitter.", source="SimCLR",
                              **_PROBABILITY)
    grey_p: float = setting(0.2, "Probability of greyscale.", source="SimCLR", **_PROBABILITY)
    blur_p: float = setting(0.5, "Probability of Gaussian blur (views >= blur_min_size only).",
                            source="SimCLR", **_PROBABILITY)
    blur_sigma: tuple[float, float] = setting(
        (0.1, 2.0), "Range of the blur's sigma in output pixels.", source="SimCLR",
        **_POSITIVE_PAIR)
    blur_min_size: int = setting(
        64, "Blur only views at least this many pixels wide.",
        source="SimCLR does not blur CIFAR-sized images", ge=0)
    solarize_p: float = setting(0.0, "Probability of solarisation.",
                                source="SimCLR: none (BYOL: 0.2 on its second view)",
                                **_PROBABILITY)
    solarize_threshold: float = setting(0.5, "Values >= this are inverted when solarising.",
                                        source="BYOL", ge=0, le=1)
    rotation: float = setting(
        0.0, "Turn each crop by up to +-this many degrees (0: off; ~10-15 suits digits).",
        source="SimCLR: none", ge=0, le=180, note="is in degrees and ")

    @property
    def brightness(self) -> float:
        """Brightness jitter amount b: factor uniform in [max(0, 1 - b), 1 + b]."""
        return 0.8 * self.jitter_strength

    @property
    def contrast(self) -> float:
        """Contrast jitter amount (same form as ``brightness``)."""
        return 0.8 * self.jitter_strength

    @property
    def saturation(self) -> float:
        """Saturation jitter amount (same form as ``brightness``)."""
        return 0.8 * self.jitter_strength

    @property
    def hue(self) -> float:
        """Hue jitter amount h: shift uniform in [-h, h] turns."""
        return 0.2 * self.jitter_strength


@dataclass
class ViewSettings(AugmentConfig):
    """The views a method trains on: the augmentation of every view plus multi-crop's small
    local views (Caron et al. 2020)."""

    num_local_crops: int | None = setting(
        None, "Multi-crop: small local views per image; none: the method's (SwAV, DINO: 6).",
        source="SwAV and DINO", ge=0)
    local_crop_size: int | None = setting(
        None, "Multi-crop: side of the local views; none: 3/7 of the image size.",
        source="SwAV: 96 px local views of 224 px images", ge=1)
    local_crop_scale: tuple[float, float] = setting(
        (0.05, 0.4), "Multi-crop: area range of the local views.",
        source="DINO", **_UNIT_PAIR)
    min_view_size: int | None = setting(
        None, "Progressive resizing: the global views start at this size and grow to the image "
        "size over view_size_ramp (none: always the image size).",
        source="FFCV's progressive resizing", ge=4)
    view_size_ramp: tuple[float, float] = setting(
        (0.0, 0.75), "Progressive resizing: share of the schedule over which the view size "
        "grows linearly from min_view_size to the image size.", source="here",
        ge=0, le=1, ordered=True, must_be="two numbers with 0 <= min <= max <= 1")
    blur_p_views: tuple[float, float] | None = setting(
        None, "Blur probability of view 1 and view 2 of a two-view method (instead of blur_p; "
        "BYOL's asymmetric views, Grill et al. 2020 Table 6: 1.0,0.1); none: blur_p for both.",
        source="SimCLR: the same for both views", **_PROBABILITY)
    solarize_p_views: tuple[float, float] | None = setting(
        None, "Solarisation probability of view 1 and view 2 of a two-view method (instead of "
        "solarize_p; BYOL: 0.0,0.2); none: solarize_p for both.",
        source="SimCLR: the same for both views", **_PROBABILITY)

    #: the settings that are not part of one view's augmentation
    VIEW_SET_FIELDS: ClassVar[tuple[str, ...]] = (
        "num_local_crops", "local_crop_size", "local_crop_scale", "blur_p_views",
        "solarize_p_views", "min_view_size", "view_size_ramp")

    def augment(self) -> AugmentConfig:
        """The augmentation of one view (without the multi-crop and per-view settings)."""
        values = self.to_dict()
        for name in self.VIEW_SET_FIELDS:
            values.pop(name)
        return AugmentConfig.from_mapping(values)

    @property
    def asymmetric(self) -> bool:
        """True when the two views get different blur or solarisation probabilities."""
        return self.blur_p_views is not None or self.solarize_p_views is not None

    def view_augments(self) -> list[AugmentConfig] | None:
        """The augmentation of view 1 and of view 2 (``blur_p_views``, ``solarize_p_views``
        replacing ``blur_p`` and ``solarize_p``), or None when both views share
        :meth:`augment`."""
        if not self.asymmetric:
            return None
        shared = self.augment()
        blur = self.blur_p_views or (shared.blur_p, shared.blur_p)
        solarize = self.solarize_p_views or (shared.solarize_p, shared.solarize_p)
        return [shared.replace(blur_p=blur[i], solarize_p=solarize[i]) for i in range(2)]


__all__ = ["MAX_JITTER_STRENGTH", "AugmentConfig", "ViewSettings"]
