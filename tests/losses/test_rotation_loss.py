"""RotNet's rotations and loss (Gidaris et al. 2018, Sec. 2) against direct implementations."""

import math

import pytest
import torch

from contrastlab.losses import rotate_four_ways, rotation_prediction_loss


def rotate_ccw_direct(image: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """Rotate a (C, S, S) image counter-clockwise by 90 degrees, quarter_turns times:
    out[r][c] = in[c][S - 1 - r] per turn."""
    out = image.clone()
    size = image.shape[-1]
    for _ in range(quarter_turns):
        turned = torch.empty_like(out)
        for r in range(size):
            for c in range(size):
                turned[:, r, c] = out[:, c, size - 1 - r]
        out = turned
    return out


def test_rotations_and_labels_match_the_rotations_applied() -> None:
    images = torch.randn(3, 2, 5, 5)
    rotated, labels = rotate_four_ways(images)
    assert rotated.shape == (12, 2, 5, 5)
    for y in range(4):
        for i in range(3):
            assert labels[y * 3 + i] == y
            torch.testing.assert_close(rotated[y * 3 + i], rotate_ccw_direct(images[i], y))


def test_ninety_degrees_is_counter_clockwise() -> None:
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = 1.0  # top-left pixel
    rotated, _ = rotate_four_ways(image)
    assert rotated[1, 0, 3, 0] == 1.0  # 90 degrees counter-clockwise: bottom-left
    assert rotated[2, 0, 3, 3] == 1.0  # 180: bottom-right
    assert rotated[3, 0, 0, 3] == 1.0  # 270: top-right


def loss_direct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-(1/4N) sum_i log softmax(F(rot(x_i)))_{y_i}."""
    total = 0.0
    for i in range(logits.shape[0]):
        log_normaliser = torch.log(sum(torch.exp(logits[i, k]) for k in range(4)))
        total = total + log_normaliser - logits[i, int(labels[i])]
    return total / logits.shape[0]


@pytest.mark.parametrize("n", [1, 5])
def test_loss_value_and_gradient_match_direct_formula(n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    logits = torch.randn(4 * n, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    _, labels = rotate_four_ways(torch.zeros(n, 1, 2, 2))
    ours = rotation_prediction_loss(logits, labels)
    direct = loss_direct(logits, labels)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0],
                               torch.autograd.grad(direct, logits)[0], atol=1e-5, rtol=1e-5)
    uniform = rotation_prediction_loss(torch.zeros(4 * n, 4), labels)
    assert uniform.item() == pytest.approx(math.log(4))


def test_non_square_images_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        rotate_four_ways(torch.zeros(2, 1, 4, 6))
