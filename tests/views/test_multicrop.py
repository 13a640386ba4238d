"""MultiCropViews: group sizes and order, determinism, the local crop scale, trainer wiring."""

from __future__ import annotations

import pytest
import torch

from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.runs import build_views
from contrastlab.views import AugmentConfig, AugmentedViews, MultiCropViews

MEAN3, STD3 = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PLAIN = AugmentConfig(crop_scale=(0.5, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.0, blur_p=0.0)


def uint8_images(n: int = 8, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=gen)


def ramp_images(n: int, size: int) -> torch.Tensor:
    """Red = column / (size - 1), green = row / (size - 1): a view's value ranges measure the
    width and height of the crop it was cut from."""
    ramp = torch.arange(size, dtype=torch.float32) / (size - 1) * 255
    red = ramp.view(1, size).expand(size, size)
    green = ramp.view(size, 1).expand(size, size)
    image = torch.stack([red, green, torch.zeros(size, size)]).round().to(torch.uint8)
    return image.unsqueeze(0).repeat(n, 1, 1, 1)


def crop_area_fraction(view: torch.Tensor, source_size: int) -> torch.Tensor:
    """Area of each view's crop as a fraction of the source image, from the ramps.

    The output pixel centres of a crop of w source pixels span w (1 - 1/out) source pixels, and
    the ramp rises 1 per (size - 1) pixels."""
    x = view * STD3[0] + MEAN3[0]
    width = x[:, 0].amax(dim=(1, 2)) - x[:, 0].amin(dim=(1, 2))
    height = x[:, 1].amax(dim=(1, 2)) - x[:, 1].amin(dim=(1, 2))
    out = view.shape[-1]
    per_side = (1 - 1 / out) * source_size / (source_size - 1)
    return width * height / per_side**2


def test_group_sizes_and_order_global_then_local() -> None:
    recipe = MultiCropViews(24, 10, 3, MEAN3, STD3, num_global=2, num_local=5)
    views = recipe(uint8_images(6), torch.Generator().manual_seed(0))
    assert recipe.num_views == 7 and len(views) == 7
    assert [tuple(v.shape) for v in views] == [(6, 3, 24, 24)] * 2 + [(6, 3, 10, 10)] * 5
    assert all(v.dtype == torch.float32 for v in views)
    # independent crops: no two views are the same
    for i in range(7):
        for j in range(i + 1, 7):
            if views[i].shape == views[j].shape:
                assert not torch.allclose(views[i], views[j])
    only_global = MultiCropViews(24, 10, 3, MEAN3, STD3, num_global=1, num_local=0)
    assert [v.shape[-1] for v in only_global(uint8_images(6), None)] == [24]


def test_deterministic_with_a_seeded_generator() -> None:
    images = uint8_images(5)
    recipe = MultiCropViews(16, 8, 3, MEAN3, STD3, num_local=3)
    a = recipe(images, torch.Generator().manual_seed(3))
    b = recipe(images, torch.Generator().manual_seed(3))
    c = recipe(images, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[0], c[0]) and not torch.allclose(a[-1], c[-1])


def test_global_views_are_the_simclr_views_of_the_same_draws() -> None:
    # the global group comes first and is drawn first: with the same generator state it equals
    # AugmentedViews with the same settings
    images = uint8_images(4)
    multi = MultiCropViews(16, 8, 3, MEAN3, STD3, PLAIN, num_global=2, num_local=2)
    simclr = AugmentedViews(16, 3, MEAN3, STD3, PLAIN, num_views=2)
    a = multi(images, torch.Generator().manual_seed(9))
    b = simclr(images, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_crop_scales_of_global_and_local_views_are_honoured() -> None:
    size = 128
    recipe = MultiCropViews(32, 16, 3, MEAN3, STD3, PLAIN, num_global=2, num_local=4,
                            local_crop_scale=(0.05, 0.2))
    views = recipe(ramp_images(64, size), torch.Generator().manual_seed(0))
    global_area = torch.cat([crop_area_fraction(v, size) for v in views[:2]])
    local_area = torch.cat([crop_area_fraction(v, size) for v in views[2:]])
    # rounding boxes to whole pixels moves the area by a few percent at most
    assert global_area.min() > 0.5 * 0.93 and global_area.max() < 1.0 * 1.07
    assert local_area.min() > 0.05 * 0.9 and local_area.max() < 0.2 * 1.1
    # the whole range is used, not one fixed crop
    assert local_area.min() < 0.08 and local_area.max() > 0.16


def test_invalid_group_sizes() -> None:
    with pytest.raises(ConfigError, match="num_global"):
        MultiCropViews(16, 8, 3, MEAN3, STD3, num_global=0)
    with pytest.raises(ConfigError, match="num_local"):
        MultiCropViews(16, 8, 3, MEAN3, STD3, num_local=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_views_on_cuda() -> None:
    images = uint8_images(4)
    recipe = MultiCropViews(16, 8, 3, MEAN3, STD3, num_local=2)
    cpu = recipe(images, torch.Generator().manual_seed(1))
    cuda = recipe(images.cuda(), torch.Generator().manual_seed(1))
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(a, b.cpu(), atol=1e-4, rtol=1e-4)


def test_trainer_builds_multi_crop_for_swav_and_dino_only() -> None:
    for method in ("swav", "dino"):
        config = build_config(None, {"method": method, "data": "digits"})
        views = build_views(config, 28, 1, (0.5,), (0.25,))
        assert isinstance(views, MultiCropViews)
        assert (views.num_global, views.num_local) == (2, 6)
        assert views.local_augment.output_size == 12  # round(3/7 * 28)
        assert views.local_augment.config.crop_scale == (0.05, 0.4)
    tiny = build_views(build_config(None, {"method": "dino", "num_local_crops": 2,
                                           "local_crop_scale": [0.1, 0.3]}), 8, 1, (0.5,), (0.25,))
    assert isinstance(tiny, MultiCropViews) and tiny.num_local == 2
    assert tiny.local_augment.output_size == 4
    assert tiny.local_augment.config.crop_scale == (0.1, 0.3)
    no_local = build_views(build_config(None, {"method": "swav", "num_local_crops": 0}), 8, 1,
                           (0.5,), (0.25,))
    assert isinstance(no_local, AugmentedViews) and no_local.num_views == 2
    with pytest.raises(ConfigError, match="multi-crop"):
        build_config(None, {"method": "simclr", "num_local_crops": 2})


def test_fixed_size_backbones_refuse_local_views_up_front() -> None:
    with pytest.raises(ConfigError, match="--num-local-crops 0"):
        build_config(None, {"method": "dino", "backbone": "vit-tiny"})
    build_config(None, {"method": "dino", "backbone": "vit-tiny", "num_local_crops": 0})
