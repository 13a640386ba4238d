"""Batched, seeded image augmentations for self-supervised learning.

Views are computed on the device of the input images (CPU or CUDA) with per-sample random
parameters drawn from a CPU ``torch.Generator``, so the same seed gives the same views anywhere.

* ``AugmentedViews``: two (or more) augmented views per image, SimCLR recipe by default.
* ``MultiCropViews``: global + smaller local views (SwAV, DINO multi-crop).
* ``EvalTransform``: deterministic resize + normalise.
* ``AugmentConfig`` / ``BatchAugment``: the configurable augmentation pipeline.
* ``channel_stats``: per-channel mean/std of a uint8 dataset.
* ``contrastlab.views.functional``: the batched operations themselves.
"""

from contrastlab.views import functional
from contrastlab.views.augment import AugmentConfig, BatchAugment, ViewParams
from contrastlab.views.recipes import AugmentedViews, EvalTransform, MultiCropViews, channel_stats

__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "EvalTransform",
    "MultiCropViews",
    "AugmentedViews",
    "ViewParams",
    "channel_stats",
    "functional",
]
