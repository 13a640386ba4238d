"""AugmentedViews, EvalTransform and channel_stats."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from contrastlab.errors import ConfigError
from contrastlab.views import AugmentConfig, AugmentedViews, EvalTransform, channel_stats
from contrastlab.views import functional as VF

CUDA = torch.cuda.is_available()
MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def uint8_images(n: int = 8, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen)


def test_simclr_views_shapes_and_independence() -> None:
    images = uint8_images(16)
    views = AugmentedViews(32, 3, MEAN3, STD3)(images, torch.Generator().manual_seed(0))
    assert isinstance(views, list) and len(views) == 2
    for v in views:
        assert v.shape == (16, 3, 32, 32) and v.dtype == torch.float32
    assert not torch.allclose(views[0], views[1])
    # every image's two views differ
    assert ((views[0] - views[1]).abs().flatten(1).amax(1) > 1e-3).all()


def test_simclr_defaults_follow_the_paper() -> None:
    views = AugmentedViews(32, 3, MEAN3, STD3)
    assert views.config == AugmentConfig()
    assert views.num_views == 2
    assert not views.augment.blur_enabled  # below 64 px
    assert AugmentedViews(96, 3, MEAN3, STD3).augment.blur_enabled


def test_simclr_views_deterministic() -> None:
    images = uint8_images(8)
    recipe = AugmentedViews(24, 3, MEAN3, STD3, num_views=3)
    a = recipe(images, torch.Generator().manual_seed(4))
    b = recipe(images, torch.Generator().manual_seed(4))
    c = recipe(images, torch.Generator().manual_seed(5))
    assert len(a) == 3
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[0], c[0])


def test_recipes_pickle_and_channels_last_input() -> None:
    images = uint8_images(6)
    recipe = AugmentedViews(16, 3, MEAN3, STD3)
    clone = pickle.loads(pickle.dumps(recipe))
    a = recipe(images, torch.Generator().manual_seed(2))
    b = clone(
        images.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(2)
    )
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))
    assert "AugmentedViews" in repr(recipe)
    assert "EvalTransform" in repr(EvalTransform(8, 1, (0,), (1,)))


def test_simclr_views_single_channel() -> None:
    images = uint8_images(8, 1, 28, 28)
    views = AugmentedViews(28, 1, (0.13,), (0.31,))(images, torch.Generator().manual_seed(0))
    assert [v.shape for v in views] == [(8, 1, 28, 28)] * 2
    assert all(torch.isfinite(v).all() for v in views)


def test_simclr_views_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="num_views"):
        AugmentedViews(32, 3, MEAN3, STD3, num_views=0)
    with pytest.raises(ConfigError, match="mean"):
        AugmentedViews(32, 3, (0.5,), STD3)
    with pytest.raises(ConfigError, match="output_size"):
        AugmentedViews(0, 3, MEAN3, STD3)


def test_eval_transform_same_size_only_normalises() -> None:
    images = uint8_images(4)
    out = EvalTransform(32, 3, MEAN3, STD3)(images)
    expected = (images.float() / 255 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(
        STD3
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-6)


def test_eval_transform_resizes_with_antialias() -> None:
    images = uint8_images(3, 3, 40, 48)
    out = EvalTransform(16, 3, MEAN3, STD3)(images)
    resized = F.interpolate(
        images.float() / 255, size=(16, 16), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(out, VF.normalize(resized, MEAN3, STD3), atol=1e-5, rtol=1e-6)
    assert torch.equal(out, EvalTransform(16, 3, MEAN3, STD3)(images))


def test_eval_transform_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="std"):
        EvalTransform(16, 1, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(16, 3, MEAN3, STD3)(torch.zeros(1, 3, 16, 16))


def test_channel_stats_matches_direct_computation() -> None:
    images = uint8_images(37, 3, 9, 7, seed=3)
    images[:, 1] //= 2
    mean, std = channel_stats(images, chunk_size=5)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    one_mean, one_std = channel_stats(images[:, :1])
    assert len(one_mean) == len(one_std) == 1
    assert one_mean[0] == pytest.approx(mean[0], abs=1e-9)


def test_channel_stats_constant_and_invalid() -> None:
    images = torch.full((4, 1, 3, 3), 51, dtype=torch.uint8)
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.2,)) and std == pytest.approx((0.0,), abs=1e-9)
    with pytest.raises(ValueError):
        channel_stats(torch.zeros(0, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError):
        channel_stats(torch.zeros(2, 3, 4, 4))


@pytest.mark.skipif(not CUDA, reason="CUDA not available")
def test_recipes_on_cuda_match_cpu() -> None:
    images = uint8_images(32)
    recipe = AugmentedViews(32, 3, MEAN3, STD3)
    cpu = recipe(images, torch.Generator().manual_seed(0))
    cuda = recipe(images.cuda(), torch.Generator().manual_seed(0))
    for a, b in zip(cpu, cuda, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)
    ev = EvalTransform(16, 3, MEAN3, STD3)
    torch.testing.assert_close(ev(images.cuda()).cpu(), ev(images), atol=1e-5, rtol=0)
    (gpu_mean, gpu_std), (cpu_mean, cpu_std) = channel_stats(images.cuda()), channel_stats(images)
    assert gpu_mean == pytest.approx(cpu_mean) and gpu_std == pytest.approx(cpu_std)
