"""AugmentConfig validation and the BatchAugment pipeline."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.views import AugmentConfig, BatchAugment
from contrastlab.views import functional as VF

CUDA = torch.cuda.is_available()
MEAN3, STD3 = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)

# No randomness at all: full-image crop, no flip, no colour change.
IDENTITY = AugmentConfig(
    crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.0, blur_p=0.0
)


def uint8_images(n: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    c = len(mean)
    return x * torch.tensor(std).view(1, c, 1, 1) + torch.tensor(mean).view(1, c, 1, 1)


# ---------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------


def test_defaults_are_the_simclr_recipe() -> None:
    cfg = AugmentConfig()
    assert cfg.crop_scale == (0.08, 1.0) and cfg.crop_ratio == pytest.approx((0.75, 4 / 3))
    assert (cfg.flip_p, cfg.jitter_strength, cfg.jitter_p, cfg.grey_p) == (0.5, 0.5, 0.8, 0.2)
    assert (cfg.blur_p, cfg.blur_sigma, cfg.blur_min_size) == (0.5, (0.1, 2.0), 64)
    assert (cfg.solarize_p, cfg.solarize_threshold) == (0.0, 0.5)
    assert cfg.brightness == cfg.contrast == cfg.saturation == pytest.approx(0.4)
    assert cfg.hue == pytest.approx(0.1)


def test_lists_are_accepted_as_pairs() -> None:
    cfg = AugmentConfig(crop_scale=[0.2, 0.9])  # type: ignore[arg-type]
    assert cfg.crop_scale == (0.2, 0.9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.5, 1.2)),
        ("crop_scale", (0.9, 0.5)),
        ("crop_scale", (0.5,)),
        ("crop_ratio", (0.0, 1.0)),
        ("crop_ratio", (2.0, 1.0)),
        ("flip_p", 1.5),
        ("flip_p", -0.1),
        ("jitter_p", 2),
        ("grey_p", float("nan")),
        ("blur_p", -1.0),
        ("solarize_p", 1.01),
        ("jitter_strength", -0.1),
        ("jitter_strength", 3.0),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("blur_min_size", -1),
        ("solarize_threshold", 1.5),
        ("rotation", -1.0),
        ("rotation", 181.0),
        ("rotation", "15"),
    ],
)
def test_invalid_config_raises_config_error_naming_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        AugmentConfig(**{field: value})
    message = str(info.value)
    assert field in message
    assert "must be" in message  # what is allowed


def test_config_error_names_value() -> None:
    with pytest.raises(ConfigError, match=r"flip_p .*\[0, 1\], got 1\.5"):
        AugmentConfig(flip_p=1.5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"output_size": 0}, "output_size"),
        ({"channels": 2, "mean": (0.5, 0.5), "std": (0.2, 0.2)}, "channels"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.2, 0.2, 0.2, 0.2)}, "std"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"std": (0.2, -1.0, 0.2)}, "std"),
    ],
)
def test_invalid_batch_augment_arguments(kwargs: dict, field: str) -> None:
    args = {"output_size": 16, "channels": 3, "mean": MEAN3, "std": STD3} | kwargs
    with pytest.raises(ConfigError, match=field):
        BatchAugment(AugmentConfig(), **args)


def test_wrong_input_is_rejected() -> None:
    aug = BatchAugment(AugmentConfig(), 16, 3, MEAN3, STD3)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 16, 16), gen())
    with pytest.raises(ValueError, match="3"):
        aug(uint8_images(2, 1), gen())


# ---------------------------------------------------------------------------------------------
# Pipeline behaviour
# ---------------------------------------------------------------------------------------------


def test_output_dtype_shape_device() -> None:
    aug = BatchAugment(AugmentConfig(), 12, 3, MEAN3, STD3)
    out = aug(uint8_images(5, 3, 20, 16), gen())
    assert out.dtype == torch.float32 and out.shape == (5, 3, 12, 12)
    assert out.device.type == "cpu"
    values = denormalize(out, MEAN3, STD3)
    assert values.min() >= -1e-5 and values.max() <= 1 + 1e-5


def test_identity_config_only_normalises() -> None:
    images = uint8_images(4)
    out = BatchAugment(IDENTITY, 16, 3, MEAN3, STD3)(images, gen())
    expected = VF.normalize(images.float() / 255, MEAN3, STD3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_same_seed_same_views_different_seed_different_views() -> None:
    images = uint8_images(16)
    aug = BatchAugment(AugmentConfig(), 16, 3, MEAN3, STD3)
    a, b, c = aug(images, gen(1)), aug(images, gen(1)), aug(images, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_generator_state_can_be_checkpointed() -> None:
    images = uint8_images(8)
    aug = BatchAugment(AugmentConfig(), 16, 3, MEAN3, STD3)
    g = gen(5)
    aug(images, g)
    state = g.get_state()
    first = aug(images, g)
    g.set_state(state)
    assert torch.equal(aug(images, g), first)


def test_each_sample_gets_its_own_view() -> None:
    images = uint8_images(1).expand(16, 3, 16, 16).contiguous()
    out = BatchAugment(AugmentConfig(), 16, 3, MEAN3, STD3)(images, gen())
    flat = out.flatten(1)
    distinct = {tuple(torch.round(row * 1e4).tolist()) for row in flat}
    assert len(distinct) == 16


def test_flip_frequency_and_values() -> None:
    images = uint8_images(400, 3, 8, 8)
    cfg = dataclasses.replace(IDENTITY, flip_p=0.5)
    out = BatchAugment(cfg, 8, 3, MEAN3, STD3)(images, gen(3))
    plain = VF.normalize(images.float() / 255, MEAN3, STD3)
    same = (out - plain).abs().flatten(1).amax(1) < 1e-5
    flipped = (out - plain.flip(3)).abs().flatten(1).amax(1) < 1e-5
    assert (same ^ flipped).all()  # each view is exactly the image or its mirror
    assert abs(flipped.float().mean().item() - 0.5) < 0.08


def test_parameter_frequencies() -> None:
    cfg = AugmentConfig(flip_p=0.3, jitter_p=0.6, grey_p=0.25, blur_p=0.4, solarize_p=0.1)
    aug = BatchAugment(cfg, 64, 3, MEAN3, STD3)
    n = 20000
    params = aug.sample_params(n, 64, 64, gen(7))
    assert abs(params.flip.float().mean().item() - 0.3) < 0.02
    assert abs(params.jitter.num_selected / n - 0.6) < 0.02
    assert abs(params.grey_index.numel() / n - 0.25) < 0.02
    assert abs(params.blur_index.numel() / n - 0.4) < 0.02
    assert abs(params.solarize_index.numel() / n - 0.1) < 0.02
    sigma = params.blur_sigma
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    boxes = params.boxes
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1.0
    # jitter factors stay in their ranges; every op appears at every position
    assert params.jitter.factors.shape == (4, params.jitter.num_selected)
    for counts in params.jitter.counts:
        assert min(counts) > 0.2 * params.jitter.num_selected


def test_jitter_factor_ranges() -> None:
    cfg = AugmentConfig(jitter_strength=1.0, jitter_p=1.0)
    params = BatchAugment(cfg, 8, 3, MEAN3, STD3).sample_params(5000, 8, 8, gen(1))
    plan = params.jitter
    start = 0
    for op in range(4):
        # position 0 slices hold the op's parameter for the samples that start with it
        values = plan.factors[0, start : start + plan.counts[0][op]]
        start += plan.counts[0][op]
        if op < 3:
            assert values.min() >= 0.2 - 1e-6 and values.max() <= 1.8 + 1e-6
            assert values.min() < 0.3 and values.max() > 1.7
        else:
            assert values.min() >= -0.2 - 1e-6 and values.max() <= 0.2 + 1e-6


def test_jitter_frequency_on_images() -> None:
    images = uint8_images(300, 3, 8, 8)
    cfg = dataclasses.replace(IDENTITY, jitter_p=0.7)
    out = BatchAugment(cfg, 8, 3, MEAN3, STD3)(images, gen(11))
    plain = VF.normalize(images.float() / 255, MEAN3, STD3)
    changed = (out - plain).abs().flatten(1).amax(1) > 1e-4
    assert abs(changed.float().mean().item() - 0.7) < 0.08


def test_grey_frequency_and_values() -> None:
    images = uint8_images(300, 3, 8, 8)
    cfg = dataclasses.replace(IDENTITY, grey_p=0.3)
    out = denormalize(BatchAugment(cfg, 8, 3, MEAN3, STD3)(images, gen(2)), MEAN3, STD3)
    grey = (out[:, 0] - out[:, 1]).abs().flatten(1).amax(1) < 1e-5
    grey &= (out[:, 1] - out[:, 2]).abs().flatten(1).amax(1) < 1e-5
    assert abs(grey.float().mean().item() - 0.3) < 0.08
    expected = VF.grayscale(images[grey].float() / 255)
    torch.testing.assert_close(out[grey], expected, atol=1e-5, rtol=0)


def test_blur_only_at_or_above_min_size() -> None:
    images = uint8_images(4, 3, 16, 16)
    cfg = dataclasses.replace(IDENTITY, blur_p=1.0, blur_min_size=16)
    blurred = BatchAugment(cfg, 16, 3, MEAN3, STD3)(images, gen())
    plain = BatchAugment(IDENTITY, 16, 3, MEAN3, STD3)(images, gen())
    assert not torch.allclose(blurred, plain, atol=1e-3)
    off = BatchAugment(dataclasses.replace(cfg, blur_min_size=17), 16, 3, MEAN3, STD3)
    assert not off.blur_enabled
    torch.testing.assert_close(off(images, gen()), plain, atol=1e-6, rtol=0)


def test_solarize_always() -> None:
    images = uint8_images(4)
    cfg = dataclasses.replace(IDENTITY, solarize_p=1.0, solarize_threshold=0.0)
    out = denormalize(BatchAugment(cfg, 16, 3, MEAN3, STD3)(images, gen()), MEAN3, STD3)
    torch.testing.assert_close(out, 1 - images.float() / 255, atol=1e-5, rtol=0)


def test_single_channel_images() -> None:
    images = uint8_images(32, 1, 16, 16)
    cfg = AugmentConfig(jitter_p=1.0, grey_p=1.0)
    aug = BatchAugment(cfg, 8, 1, (0.5,), (0.2,))
    assert aug.jitter_enabled == (True, True, False, False)
    out = aug(images, gen())
    assert out.shape == (32, 1, 8, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    params = aug.sample_params(32, 16, 16, gen())
    assert params.grey_index.numel() == 0


def test_zero_strength_jitter_is_skipped() -> None:
    aug = BatchAugment(AugmentConfig(jitter_strength=0.0, jitter_p=1.0), 8, 3, MEAN3, STD3)
    assert aug.jitter_enabled == (False, False, False, False)
    assert aug.sample_params(10, 8, 8, gen()).jitter.num_selected == 0


@pytest.mark.skipif(not CUDA, reason="CUDA not available")
def test_cuda_matches_cpu() -> None:
    images = uint8_images(64, 3, 24, 24)
    cfg = AugmentConfig(blur_min_size=16, solarize_p=0.3)
    aug = BatchAugment(cfg, 16, 3, MEAN3, STD3)
    cpu = aug(images, gen(9))
    cuda = aug(images.cuda(), gen(9))
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)
