"""Batched view operations checked against their direct definitions."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.views import functional as VF

CUDA = torch.cuda.is_available()


def rand_images(n: int = 4, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def box(top: float, left: float, h: float, w: float, n: int = 1) -> torch.Tensor:
    return torch.tensor([[top, left, h, w]] * n, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Crop + flip
# ---------------------------------------------------------------------------------------------


def test_full_box_without_flip_is_identity() -> None:
    x = rand_images(3, 3, 12, 10)
    out = VF.resized_crop_flip(x, box(0, 0, 12, 10, 3), torch.zeros(3, dtype=torch.bool), (12, 10))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_full_box_with_flip_is_torch_flip() -> None:
    x = rand_images(2, 3, 9, 7)
    out = VF.resized_crop_flip(x, box(0, 0, 9, 7, 2), torch.ones(2, dtype=torch.bool), (9, 7))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), atol=1e-5, rtol=0)


def test_flip_is_per_sample() -> None:
    x = rand_images(2, 1, 6, 6)
    out = VF.resized_crop_flip(x, box(0, 0, 6, 6, 2), torch.tensor([False, True]), 6)
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.flip(x[1], dims=[2]), atol=1e-5, rtol=0)


def test_same_size_box_equals_slice() -> None:
    x = rand_images(1, 3, 16, 20)
    out = VF.resized_crop_flip(x, box(3, 5, 8, 8), torch.zeros(1, dtype=torch.bool), 8)
    torch.testing.assert_close(out, x[:, :, 3:11, 5:13], atol=1e-5, rtol=0)
    flipped = VF.resized_crop_flip(x, box(3, 5, 8, 8), torch.ones(1, dtype=torch.bool), 8)
    torch.testing.assert_close(
        flipped, torch.flip(x[:, :, 3:11, 5:13], dims=[3]), atol=1e-5, rtol=0
    )


def test_integer_aligned_box_equals_slice_then_resize() -> None:
    x = rand_images(2, 3, 24, 24)
    boxes = torch.tensor([[2.0, 4.0, 16.0, 16.0], [6.0, 0.0, 12.0, 8.0]])
    out = VF.resized_crop_flip(x, boxes, torch.zeros(2, dtype=torch.bool), (8, 8))
    ref0 = F.interpolate(x[0:1, :, 2:18, 4:20], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[0:1], ref0, atol=1e-5, rtol=0)
    # 12x8 box -> 8x8 is a downscale by 1.5 rows and no column change; inside the box only.
    ref1 = F.interpolate(x[1:2, :, 6:18, 0:8], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[1:2], ref1, atol=1e-5, rtol=0)


def test_grid_equals_affine_grid() -> None:
    boxes = VF.sample_crop_boxes(
        16, 30, 40, (0.08, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(1)
    )
    flip = torch.arange(16) % 2 == 0
    theta = VF.crop_flip_theta(boxes, flip, 30, 40)
    ref = F.affine_grid(theta, [16, 3, 12, 9], align_corners=False)
    torch.testing.assert_close(
        VF.crop_flip_grid(boxes, flip, 30, 40, (12, 9)), ref, atol=1e-6, rtol=0
    )


def test_crop_box_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    height, width, n = 480, 480, 20000  # square, so rejecting boxes does not bias the ratio
    scale, ratio = (0.2, 0.6), (0.5, 2.0)
    boxes = VF.sample_crop_boxes(n, height, width, scale, ratio, gen)
    top, left, h, w = boxes.unbind(1)
    assert torch.equal(boxes, boxes.round())
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    assert area.min() >= scale[0] - 0.01 and area.max() <= scale[1] + 0.01
    aspect = w / h
    assert aspect.min() >= ratio[0] * 0.98 and aspect.max() <= ratio[1] * 1.02
    # log-uniform aspect ratio: the median of log(w/h) is near the middle of the log range
    assert abs(aspect.log().median().item()) < 0.05
    # the area spreads over the range (not stuck at one value)
    assert area.std() > 0.08
    # uniform placement: the free space is split evenly on average
    assert abs((left / (width - w).clamp(min=1)).mean().item() - 0.5) < 0.02
    assert abs((top / (height - h).clamp(min=1)).mean().item() - 0.5) < 0.02


def test_crop_boxes_fall_back_to_centre_crop() -> None:
    # 1:1 boxes of at least half the area never fit into a 10x100 strip.
    boxes = VF.sample_crop_boxes(
        5, 10, 100, (0.5, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0)
    )
    assert torch.equal(boxes, box(0, 45, 10, 10, 5))


def test_crops_are_independent_per_sample() -> None:
    boxes = VF.sample_crop_boxes(
        64, 32, 32, (0.08, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(0)
    )
    assert torch.unique(boxes, dim=0).shape[0] > 50


# ---------------------------------------------------------------------------------------------
# Colour operations
# ---------------------------------------------------------------------------------------------


def test_grayscale_weights() -> None:
    x = rand_images(2, 3, 4, 5)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    g = VF.grayscale(x)
    assert g.shape == x.shape
    for c in range(3):
        torch.testing.assert_close(g[:, c], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(VF.rgb_to_grayscale(x)[:, 0], expected, atol=1e-6, rtol=0)
    pixel = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    assert VF.grayscale(pixel)[0, 0, 0, 0].item() == pytest.approx(0.299 + 0.2935 + 0.0285)


def test_brightness() -> None:
    x = rand_images(3, 3, 4, 4)
    f = torch.tensor([0.0, 0.5, 1.6])
    out = VF.adjust_brightness(x, f)
    for i in range(3):
        torch.testing.assert_close(out[i], (x[i] * f[i]).clamp(0, 1), atol=1e-6, rtol=0)
    assert torch.equal(VF.adjust_brightness(x, torch.ones(3)), x)


def test_contrast() -> None:
    x = rand_images(3, 3, 4, 4)
    f = torch.tensor([0.0, 0.6, 1.4])
    out = VF.adjust_contrast(x, f)
    for i in range(3):
        m = (0.299 * x[i, 0] + 0.587 * x[i, 1] + 0.114 * x[i, 2]).mean()
        torch.testing.assert_close(
            out[i], (f[i] * x[i] + (1 - f[i]) * m).clamp(0, 1), atol=1e-6, rtol=0
        )
    # factor 0: every pixel is the mean luma
    assert torch.allclose(out[0], out[0].mean().expand_as(out[0]), atol=1e-6)


def test_contrast_single_channel() -> None:
    x = rand_images(2, 1, 5, 5)
    f = torch.tensor([0.5, 2.0])
    out = VF.adjust_contrast(x, f)
    for i in range(2):
        torch.testing.assert_close(
            out[i], (f[i] * x[i] + (1 - f[i]) * x[i].mean()).clamp(0, 1), atol=1e-6, rtol=0
        )


def test_saturation() -> None:
    x = rand_images(3, 3, 4, 4)
    f = torch.tensor([0.0, 0.5, 1.8])
    out = VF.adjust_saturation(x, f)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    for i in range(3):
        torch.testing.assert_close(
            out[i], (f[i] * x[i] + (1 - f[i]) * grey[i]).clamp(0, 1), atol=1e-6, rtol=0
        )
    torch.testing.assert_close(out[0], VF.grayscale(x[0:1])[0], atol=1e-6, rtol=0)


def test_hue_zero_is_identity() -> None:
    x = rand_images(4, 3, 8, 8)
    x[0, :, 0, 0] = torch.tensor([0.3, 0.3, 0.3])  # grey pixel
    x[1, :, 0, 0] = torch.tensor([0.7, 0.7, 0.2])  # tie of two maxima
    x[2, :, 0, 0] = torch.tensor([0.9, 0.1, 0.9])
    x[3, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0])
    torch.testing.assert_close(VF.adjust_hue(x, torch.zeros(4)), x, atol=1e-5, rtol=0)
    assert VF.adjust_hue(x, torch.ones(4) * 0.5).shape == x.shape


def test_hue_third_turn_maps_red_to_green() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    out = VF.adjust_hue(red, torch.tensor([1 / 3, -1 / 3]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)


def test_hue_matches_hsv_round_trip() -> None:
    gen = torch.Generator().manual_seed(3)
    n, pixels = 8, 40
    x = torch.rand(n, 3, 1, pixels, generator=gen)
    x[:, :, 0, :5] = (x[:, :, 0, :5] * 4).round() / 4  # some exact ties and greys
    shift = torch.rand(n, generator=gen) - 0.5
    out = VF.adjust_hue(x, shift)
    expected = torch.empty_like(x)
    for i in range(n):
        for j in range(pixels):
            h, s, v = colorsys.rgb_to_hsv(*x[i, :, 0, j].tolist())
            rgb = colorsys.hsv_to_rgb((h + shift[i].item()) % 1, s, v)
            expected[i, :, 0, j] = torch.tensor(rgb)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_solarize() -> None:
    x = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0]).view(1, 1, 1, 5)
    out = VF.solarize(x, 0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.2, 0.5, 0.3, 0.0]))
    per_sample = VF.solarize(x.expand(2, 1, 1, 5), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(per_sample[0].flatten(), 1 - x.flatten())
    torch.testing.assert_close(per_sample[1].flatten(), x.flatten())


def test_normalize() -> None:
    x = rand_images(2, 3, 4, 4)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(VF.normalize(x, mean, std), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(
        VF.normalize(x, torch.tensor(mean), torch.tensor(std)), expected, atol=1e-5, rtol=1e-6
    )
    y = x.clone()
    assert VF.normalize(y, mean, std, inplace=True) is y


def test_single_channel_colour_ops_are_noops() -> None:
    x = rand_images(2, 1, 4, 4)
    f = torch.tensor([0.3, 1.7])
    assert torch.equal(VF.adjust_saturation(x, f), x)
    assert torch.equal(VF.adjust_hue(x, f - 1), x)
    assert torch.equal(VF.grayscale(x), x)


# ---------------------------------------------------------------------------------------------
# Gaussian blur
# ---------------------------------------------------------------------------------------------


def test_gaussian_kernels() -> None:
    k = VF.gaussian_kernels(torch.tensor([0.5, 2.0]), 7)
    t = torch.arange(7.0) - 3
    for i, s in enumerate((0.5, 2.0)):
        ref = torch.exp(-(t**2) / (2 * s**2))
        torch.testing.assert_close(k[i], ref / ref.sum())
    with pytest.raises(ValueError):
        VF.gaussian_kernels(torch.tensor([1.0]), 4)


def test_blur_tiny_sigma_is_identity() -> None:
    x = rand_images(2, 3, 10, 10)
    torch.testing.assert_close(VF.gaussian_blur(x, torch.full((2,), 0.05), 5), x, atol=1e-6, rtol=0)


def test_blur_preserves_constant_image() -> None:
    x = torch.full((2, 3, 9, 9), 0.37)
    out = VF.gaussian_blur(x, torch.tensor([0.8, 3.0]), 7)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert out.mean().item() == pytest.approx(0.37, abs=1e-6)


def test_blur_matches_direct_2d_convolution() -> None:
    x = rand_images(3, 3, 12, 11)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    out = VF.gaussian_blur(x, sigma, 5)
    for i in range(3):
        k1 = VF.gaussian_kernels(sigma[i : i + 1], 5)[0]
        k2 = torch.outer(k1, k1)
        padded = F.pad(x[i : i + 1], (2, 2, 2, 2), mode="reflect")
        ref = F.conv2d(padded, k2.expand(3, 1, 5, 5), groups=3)
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-5, rtol=0)


def test_blur_kernel_larger_than_image() -> None:
    x = rand_images(1, 3, 3, 3)
    out = VF.gaussian_blur(x, torch.tensor([1.0]), 9)
    assert out.shape == x.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# Colour jitter in a per-sample random order
# ---------------------------------------------------------------------------------------------


def reference_jitter(
    x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor
) -> torch.Tensor:
    funcs = (VF.adjust_brightness, VF.adjust_contrast, VF.adjust_saturation, VF.adjust_hue)
    out = x.clone()
    for i in range(x.shape[0]):
        if not apply[i]:
            continue
        y = x[i : i + 1]
        for op in order[i].tolist():
            y = funcs[op](y, factors[i, op : op + 1])
        out[i] = y[0]
    return out


def random_jitter_params(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    factors = 0.5 + torch.rand(n, 4, generator=gen)
    factors[:, 3] = torch.rand(n, generator=gen) - 0.5
    order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)
    apply = torch.rand(n, generator=gen) < 0.7
    return factors, order, apply


def test_color_jitter_follows_each_samples_order() -> None:
    n = 40
    x = rand_images(n, 3, 6, 6, seed=5)
    factors, order, apply = random_jitter_params(n, seed=6)
    plan = VF.make_jitter_plan(factors, order, apply)
    assert plan.num_selected == int(apply.sum())
    assert sum(plan.counts[0]) == plan.num_selected
    out = VF.apply_color_jitter(x, plan)
    torch.testing.assert_close(out, reference_jitter(x, factors, order, apply), atol=1e-5, rtol=0)
    assert torch.equal(out[~apply], x[~apply])
    # the order matters: applying all samples in one fixed order gives something else
    fixed = reference_jitter(x, factors, torch.arange(4).expand(n, 4), apply)
    assert not torch.allclose(out, fixed, atol=1e-3)


def test_color_jitter_skips_disabled_ops_and_empty_plans() -> None:
    x = rand_images(10, 3, 5, 5)
    factors, order, apply = random_jitter_params(10, seed=1)
    plan = VF.make_jitter_plan(factors, order, apply)
    only_brightness = VF.apply_color_jitter(x, plan, enabled=(True, False, False, False))
    expected = x.clone()
    expected[apply] = VF.adjust_brightness(x[apply], factors[apply, 0])
    torch.testing.assert_close(only_brightness, expected, atol=1e-6, rtol=0)
    empty = VF.make_jitter_plan(factors, order, torch.zeros(10, dtype=torch.bool))
    assert empty.num_selected == 0
    assert torch.equal(VF.apply_color_jitter(x, empty), x)


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def test_move_tensors_round_trip_cpu() -> None:
    factors, order, apply = random_jitter_params(7, seed=2)
    plan = VF.make_jitter_plan(factors, order, apply)
    assert VF.move_tensors(plan, "cpu") is plan


def test_packed_transfer_round_trip() -> None:
    # The byte packing used for the single host-to-device copy, exercised on the CPU.
    tensors = [
        torch.tensor([1.5, -2.0, 3.25]),
        torch.arange(7),
        torch.tensor([True, False, True]),
        torch.empty(0, dtype=torch.int64),
        torch.rand(2, 3, dtype=torch.float64),
        torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)[:, 1],  # not contiguous
    ]
    moved = VF._transfer(tensors, torch.device("cpu"))
    for a, b in zip(tensors, moved, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.skipif(not CUDA, reason="CUDA not available")
def test_move_tensors_to_cuda_single_buffer() -> None:
    factors, order, apply = random_jitter_params(9, seed=2)
    plan = VF.make_jitter_plan(factors, order, apply)
    moved = VF.move_tensors(plan, "cuda")
    assert isinstance(moved, VF.JitterPlan)
    for name in ("gather", "regather", "restore", "factors"):
        a, b = getattr(plan, name), getattr(moved, name)
        assert b.device.type == "cuda" and b.dtype == a.dtype and torch.equal(a, b.cpu())
    assert moved.counts == plan.counts


@pytest.mark.skipif(not CUDA, reason="CUDA not available")
def test_ops_match_on_cuda() -> None:
    x = rand_images(6, 3, 16, 16)
    f = torch.linspace(0.4, 1.6, 6)
    for op in (VF.adjust_brightness, VF.adjust_contrast, VF.adjust_saturation):
        torch.testing.assert_close(op(x.cuda(), f.cuda()).cpu(), op(x, f), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        VF.adjust_hue(x.cuda(), (f - 1).cuda()).cpu(), VF.adjust_hue(x, f - 1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        VF.gaussian_blur(x.cuda(), f.cuda(), 5).cpu(), VF.gaussian_blur(x, f, 5), atol=1e-5, rtol=0
    )


def test_constants() -> None:
    assert VF.GREY_WEIGHTS == (0.299, 0.587, 0.114)
    assert math.isclose(sum(VF.GREY_WEIGHTS), 1.0)
    assert VF.JITTER_OPS == ("brightness", "contrast", "saturation", "hue")


# ---------------------------------------------------------------------------------------------
# Rotation of the crop box
# ---------------------------------------------------------------------------------------------


def test_quarter_turn_of_the_full_box_is_rot90() -> None:
    x = rand_images(3, 2, 8, 8, seed=5)
    n = x.shape[0]
    flip = torch.zeros(n, dtype=torch.bool)
    quarter = torch.full((n,), math.pi / 2)
    out = VF.resized_crop_flip(x, box(0, 0, 8, 8, n), flip, 8, quarter)
    # output (x, y) samples the source at R(90 deg) (x, y) = (-y, x): the top row moves left
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    half = VF.resized_crop_flip(x, box(0, 0, 8, 8, n), flip, 8, 2 * quarter)
    assert torch.allclose(half, torch.rot90(x, 2, dims=(2, 3)), atol=1e-5)


def test_zero_angle_is_the_plain_crop() -> None:
    x = rand_images(2, 3, 12, 10)
    boxes = torch.tensor([[1.0, 2.0, 7.0, 5.0], [0.0, 0.0, 12.0, 10.0]])
    flip = torch.tensor([True, False])
    plain = VF.resized_crop_flip(x, boxes, flip, (6, 5))
    assert torch.equal(VF.resized_crop_flip(x, boxes, flip, (6, 5), torch.zeros(2)), plain)


def test_rotation_turns_about_the_box_centre_in_pixel_units() -> None:
    """Against the definition: output pixel (i, j) samples centre + R(angle) p, where p is its
    offset from the box centre in source pixels (non-square image, off-centre box)."""
    height, width, size = 12, 20, 6
    boxes = torch.tensor([[2.0, 5.0, 8.0, 8.0]])
    angle = torch.tensor([0.4])
    grid = VF.crop_flip_grid(boxes, torch.tensor([False]), height, width, (size, size), angle)
    top, left, bh, bw = boxes[0].tolist()
    cy, cx = top + bh / 2, left + bw / 2
    c, s = math.cos(0.4), math.sin(0.4)
    for i in range(size):
        for j in range(size):
            px = (j + 0.5) * bw / size - bw / 2  # offset in source pixels
            py = (i + 0.5) * bh / size - bh / 2
            sx, sy = cx + c * px - s * py, cy + s * px + c * py  # pixel-edge coordinates
            expected = torch.tensor([2 * sx / width - 1, 2 * sy / height - 1])
            assert torch.allclose(grid[0, i, j], expected, atol=1e-5)


def test_rotation_angles_are_uniform_in_the_configured_range() -> None:
    from contrastlab.views import AugmentConfig
    from contrastlab.views.augment import BatchAugment

    augment = BatchAugment(AugmentConfig(rotation=15.0), 8, 1, [0.5], [0.25])
    params = augment.sample_params(20_000, 8, 8, torch.Generator().manual_seed(0))
    degrees = torch.rad2deg(params.angle)
    assert degrees.min() >= -15.0 and degrees.max() <= 15.0
    assert abs(degrees.mean().item()) < 0.3
    assert abs(degrees.std().item() - 15.0 / math.sqrt(3)) < 0.2  # uniform on [-15, 15]
    assert BatchAugment(AugmentConfig(), 8, 1, [0.5], [0.25]).sample_params(4, 8, 8).angle is None


def test_recipes_without_rotation_keep_their_random_stream() -> None:
    """The angle is drawn after every other parameter, so turning rotation on changes nothing
    else about a view's parameters."""
    from contrastlab.views import AugmentConfig
    from contrastlab.views.augment import BatchAugment

    plain = BatchAugment(AugmentConfig(), 8, 3, [0.5] * 3, [0.25] * 3)
    turned = BatchAugment(AugmentConfig(rotation=10.0), 8, 3, [0.5] * 3, [0.25] * 3)
    a = plain.sample_params(16, 8, 8, torch.Generator().manual_seed(1))
    b = turned.sample_params(16, 8, 8, torch.Generator().manual_seed(1))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.flip, b.flip)
    assert torch.equal(a.grey_index, b.grey_index) and torch.equal(a.blur_sigma, b.blur_sigma)
