"""MAE's loss (He et al. 2022, Sec. 3) and random masking against direct loop implementations."""

import math

import pytest
import torch

from contrastlab.losses import mae_loss, masked_patch_mse, normalized_patch_targets
from contrastlab.losses.mae import num_masked, random_masking


def normalized_direct(patches: torch.Tensor) -> torch.Tensor:
    """Each patch: (x - mean) / sqrt(unbiased variance + 1e-6), written out per patch."""
    out = torch.empty_like(patches)
    n, length, p = patches.shape
    for i in range(n):
        for j in range(length):
            values = [patches[i, j, k] for k in range(p)]
            mean = sum(values) / p
            var = sum((v - mean) ** 2 for v in values) / (p - 1)
            for k in range(p):
                out[i, j, k] = (values[k] - mean) / torch.sqrt(var + 1e-6)
    return out


def masked_mse_direct(pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked (sample, patch) of the mean squared pixel error, over the masked count."""
    total, count = 0.0, 0
    n, length, p = pred.shape
    for i in range(n):
        for j in range(length):
            if mask[i, j] == 1:
                total = total + sum((pred[i, j, k] - target[i, j, k]) ** 2 for k in range(p)) / p
                count += 1
    return total / count


def example(n: int, length: int, p: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, length, p, dtype=torch.float64, generator=generator, requires_grad=True)
    patches = torch.randn(n, length, p, dtype=torch.float64, generator=generator)
    mask = (torch.rand(n, length, generator=generator) < 0.6).double()
    mask[:, 0] = 1.0
    return pred, patches, mask


@pytest.mark.parametrize("n,length,p", [(2, 4, 4), (3, 16, 12), (1, 9, 2)])
def test_normalized_targets_match_direct_formula(n: int, length: int, p: int) -> None:
    _, patches, _ = example(n, length, p, n + length + p)
    torch.testing.assert_close(normalized_patch_targets(patches), normalized_direct(patches),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_pix", [True, False])
@pytest.mark.parametrize("n,length,p", [(2, 4, 4), (3, 16, 12)])
def test_loss_value_and_gradient_match_direct_loop(n: int, length: int, p: int,
                                                   norm_pix: bool) -> None:
    pred, patches, mask = example(n, length, p, 7 * n + p)
    ours = mae_loss(pred, patches, mask, norm_pix_loss=norm_pix)
    target = normalized_direct(patches) if norm_pix else patches
    direct = masked_mse_direct(pred, target, mask)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, pred)[0],
                               torch.autograd.grad(direct, pred)[0], atol=1e-5, rtol=1e-5)


def test_visible_patches_and_targets_receive_no_gradient() -> None:
    pred, patches, mask = example(2, 8, 4, 3)
    patches.requires_grad_(True)
    loss = masked_patch_mse(pred, patches, mask)
    grad_pred, grad_target = torch.autograd.grad(loss, (pred, patches), allow_unused=True)
    visible = mask == 0
    assert visible.any()
    assert torch.all(grad_pred[visible] == 0)
    assert torch.all(grad_pred[~visible].abs().sum(-1) > 0)
    assert grad_target is None  # targets are detached


def test_constant_patch_has_zero_target() -> None:
    patches = torch.full((1, 2, 4), 3.0)
    assert torch.all(normalized_patch_targets(patches) == 0)


@pytest.mark.parametrize("length,ratio", [(16, 0.75), (49, 0.75), (64, 0.5), (10, 0.9)])
def test_random_masking_masks_exactly_round_ratio_per_sample(length: int, ratio: float) -> None:
    generator = torch.Generator().manual_seed(length)
    keep, mask, restore = random_masking(32, length, ratio, torch.device("cpu"), generator)
    masked = int(round(ratio * length))
    assert num_masked(length, ratio) == masked
    assert keep.shape == (32, length - masked)
    assert torch.all(mask.sum(dim=1) == masked)
    for i in range(32):  # visible = exactly the kept indices
        visible = {j for j in range(length) if mask[i, j] == 0}
        assert visible == set(keep[i].tolist())
    # as the decoder uses it: [visible tokens..., mask tokens...] gathered with restore_index
    # puts every visible token back at its patch and a mask token at every masked patch
    visible_tokens = keep.double()  # token of patch j carries the value j
    shuffled = torch.cat([visible_tokens, torch.full((32, masked), -1.0)], dim=1)
    restored = shuffled.gather(1, restore)
    positions = torch.arange(length).double().expand(32, -1)
    assert torch.equal(restored, torch.where(mask == 1, -1.0, positions))
    # masks differ between samples
    assert len({tuple(m.tolist()) for m in mask}) > 1


def test_random_masking_is_reproducible_with_a_generator() -> None:
    a = random_masking(4, 16, 0.75, torch.device("cpu"), torch.Generator().manual_seed(5))
    b = random_masking(4, 16, 0.75, torch.device("cpu"), torch.Generator().manual_seed(5))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert math.isclose(float(a[1].mean()), 12 / 16)
