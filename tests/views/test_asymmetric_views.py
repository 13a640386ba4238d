"""Asymmetric views (BYOL's: view 1 blurred with p = 1 and never solarised, view 2 blurred with
p = 0.1 and solarised with p = 0.2): per-view blur and solarisation probabilities, drawn from the
same random stream as symmetric views."""

from __future__ import annotations

import pytest
import torch

from contrastlab.config import TrainConfig
from contrastlab.errors import ConfigError
from contrastlab.views import AugmentConfig, AugmentedViews, MultiCropViews
from contrastlab.views.settings import ViewSettings

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
SIZE = 64  # blur applies from 64 px (blur_min_size)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)


def test_view_settings_give_byols_two_augmentations() -> None:
    settings = ViewSettings(blur_p_views=(1.0, 0.1), solarize_p_views=(0.0, 0.2))
    first, second = settings.view_augments()
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0)
    assert (second.blur_p, second.solarize_p) == (0.1, 0.2)
    assert first.replace(blur_p=0.5, solarize_p=0.0) == settings.augment()  # the rest shared
    only_blur = ViewSettings(blur_p_views=(1.0, 0.1), solarize_p=0.3).view_augments()
    assert [c.solarize_p for c in only_blur] == [0.3, 0.3]
    assert ViewSettings().view_augments() is None


def test_each_view_is_the_symmetric_view_of_its_own_augmentation() -> None:
    """The parameters are drawn in the same order either way: view v equals view v of
    symmetric views made with view v's augmentation, from the same generator state."""
    first = AugmentConfig(blur_p=1.0, solarize_p=0.0)
    second = AugmentConfig(blur_p=0.1, solarize_p=0.2)
    asymmetric = AugmentedViews(SIZE, 3, MEAN3, STD3, view_configs=[first, second])
    views = asymmetric(images(), torch.Generator().manual_seed(1))
    like_first = AugmentedViews(SIZE, 3, MEAN3, STD3, first)(images(),
                                                             torch.Generator().manual_seed(1))
    like_second = AugmentedViews(SIZE, 3, MEAN3, STD3, second)(images(),
                                                               torch.Generator().manual_seed(1))
    assert torch.equal(views[0], like_first[0]) and torch.equal(views[1], like_second[1])
    params = asymmetric.view_augments[0].sample_params(64, SIZE, SIZE,
                                                       torch.Generator().manual_seed(2))
    assert params.blur_index.numel() == 64 and params.solarize_index.numel() == 0


def test_same_configs_per_view_change_nothing() -> None:
    config = AugmentConfig(blur_p=0.5, solarize_p=0.2)
    shared = AugmentedViews(SIZE, 3, MEAN3, STD3, config)(images(),
                                                          torch.Generator().manual_seed(3))
    per_view = AugmentedViews(SIZE, 3, MEAN3, STD3, config, view_configs=[config, config])(
        images(), torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(shared, per_view, strict=True))
    with pytest.raises(ConfigError, match="3 per-view augmentations given for 2 views"):
        AugmentedViews(SIZE, 3, MEAN3, STD3, view_configs=[config] * 3)


def test_multi_crop_global_views_take_their_own_and_local_views_the_shared() -> None:
    shared = AugmentConfig(blur_p=0.5)
    first, second = shared.replace(blur_p=1.0), shared.replace(blur_p=0.1, solarize_p=0.2)
    multi = MultiCropViews(SIZE, 32, 3, MEAN3, STD3, shared, num_global=2, num_local=2,
                           global_view_configs=[first, second])
    assert [a.config for a in multi.global_augments] == [first, second]
    assert multi.local_augment.config.blur_p == 0.5 and multi.local_augment.config.solarize_p == 0
    views = multi(images(), torch.Generator().manual_seed(4))
    assert [v.shape[-1] for v in views] == [SIZE, SIZE, 32, 32]


def test_configuration_checks() -> None:
    config = TrainConfig.from_dict({"method": "byol", "blur_p_views": "1.0,0.1",
                                    "solarize_p_views": [0.0, 0.2]})
    assert config.views.blur_p_views == (1.0, 0.1) and config.views.solarize_p_views == (0.0, 0.2)
    assert config.views.augment() == AugmentConfig()  # not part of one view's augmentation
    with pytest.raises(ConfigError, match="blur_p_views is a probability and must be"):
        TrainConfig.from_dict({"blur_p_views": "1.5,0.1"})
    with pytest.raises(ConfigError, match="method 'mae' makes 1 global view"):
        TrainConfig.from_dict({"method": "mae", "solarize_p_views": "0,0.2"})
    TrainConfig.from_dict({"method": "dino", "blur_p_views": "1.0,0.1"})  # 2 global views
