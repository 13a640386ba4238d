"""MAE on a ViT: masking, what the encoder sees, the loss, gradients and the backbone check."""

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.methods import build_method
from contrastlab.methods.mae import MAE
from contrastlab.models import build_backbone
from contrastlab.models.vit import patchify


def make_mae(size: int = 8, channels: int = 1, **kwargs) -> MAE:
    torch.manual_seed(0)
    method = build_method("mae", "vit-micro", channels, backbone_options={"image_size": size},
                          decoder_dim=32, decoder_num_heads=2, **kwargs)
    assert isinstance(method, MAE)
    return method


def record_block_inputs(method: MAE) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    method.backbone.blocks[0].register_forward_hook(
        lambda module, inputs, output: shapes.append(tuple(inputs[0].shape)))
    return shapes


@pytest.mark.parametrize("size,channels,visible", [(8, 1, 4), (28, 1, 12), (32, 3, 16)])
def test_encoder_sees_only_the_visible_quarter(size: int, channels: int, visible: int) -> None:
    method = make_mae(size, channels)
    shapes = record_block_inputs(method)
    latent, mask, _ = method.forward_encoder(torch.randn(3, channels, size, size))
    patches = method.backbone.num_patches
    assert torch.all(mask.sum(1) == round(0.75 * patches))
    assert latent.shape == (3, 1 + visible, 64)
    assert shapes == [(3, 1 + visible, 64)]  # CLS + visible tokens entered the Transformer
    method.encode(torch.randn(3, channels, size, size))
    assert shapes[-1] == (3, 1 + patches, 64)  # evaluation sees every patch


def test_masked_pixels_do_not_change_the_encoder_output() -> None:
    method = make_mae(8).eval()
    images = torch.randn(2, 1, 8, 8)
    latent, mask, _ = method.forward_encoder(images, torch.Generator().manual_seed(3))
    patches = patchify(images, 2)
    changed = patches + 10 * mask.unsqueeze(-1) * torch.randn_like(patches)
    from contrastlab.models.vit import unpatchify

    altered = unpatchify(changed, 2, 1, 8)
    assert not torch.equal(altered, images)
    again, mask2, _ = method.forward_encoder(altered, torch.Generator().manual_seed(3))
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(again, latent, rtol=0, atol=0)
    visible_changed = unpatchify(patches + (1 - mask.unsqueeze(-1)), 2, 1, 8)
    third, _, _ = method.forward_encoder(visible_changed, torch.Generator().manual_seed(3))
    assert not torch.allclose(third, latent)


def loss_direct(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, p: int) -> float:
    """Loop over samples and masked patches: mean squared error against normalised pixels."""
    n, c, size, _ = images.shape
    grid = size // p
    total, count = 0.0, 0
    for i in range(n):
        for index in range(grid * grid):
            if mask[i, index] != 1:
                continue
            r, q = divmod(index, grid)
            values = [float(images[i, ch, r * p + a, q * p + b])
                      for a in range(p) for b in range(p) for ch in range(c)]
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            target = [(v - mean) / (var + 1e-6) ** 0.5 for v in values]
            total += sum((float(pred[i, index, k]) - t) ** 2
                         for k, t in enumerate(target)) / len(target)
            count += 1
    return total / count


def test_training_step_loss_equals_direct_loop() -> None:
    method = make_mae(8, 1)
    images = torch.randn(4, 1, 8, 8)
    torch.manual_seed(11)
    loss = method.training_step([images], None).loss
    torch.manual_seed(11)  # the same mask from the global generator
    pred, mask = method.reconstruct(images)
    assert abs(loss.item() - loss_direct(pred.detach(), images, mask, 2)) < 1e-5


def test_gradients_flow_only_where_expected() -> None:
    method = make_mae(8, 1)
    images = torch.randn(2, 1, 8, 8, requires_grad=True)
    torch.manual_seed(5)
    loss = method.training_step([images], None).loss
    torch.manual_seed(5)
    _, mask, _ = method.forward_encoder(images.detach())
    loss.backward()
    # pixels reach the loss only through the encoder (visible patches); targets are constants
    grad = patchify(images.grad, 2).abs().sum(-1)
    assert torch.all(grad[mask == 1] == 0)
    assert torch.all(grad[mask == 0] > 0)
    for name, parameter in method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # position embeddings are fixed sine-cosine tables, not parameters
    names = dict(method.named_parameters())
    assert not any("pos_embed" in n for n in names)


def test_non_vit_backbone_is_refused() -> None:
    with pytest.raises(ConfigError, match="vit-tiny"):
        build_method("mae", "convnet-small", 1)
    with pytest.raises(ConfigError, match="at least one masked and one visible"):
        MAE(build_backbone("vit-micro", 1, image_size=8, patch_size=4), mask_ratio=0.9)
    with pytest.raises(ValueError, match="exactly 1 view"):
        make_mae().training_step([torch.randn(2, 1, 8, 8)] * 2, None)


def test_checkpoint_round_trip_and_mask_ratio() -> None:
    a = make_mae(8, 1, mask_ratio=0.5)
    latent, mask, _ = a.forward_encoder(torch.randn(2, 1, 8, 8))
    assert latent.shape[1] == 1 + 8 and torch.all(mask.sum(1) == 8)
    b = build_method("mae", "vit-micro", 1, backbone_options={"image_size": 8},
                     decoder_dim=32, decoder_num_heads=2, mask_ratio=0.5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(a.eval().encode(x), b.eval().encode(x))
    g = torch.Generator().manual_seed(0)
    pa, _ = a.reconstruct(x, g)
    pb, _ = b.reconstruct(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(pa, pb)
