"""ViT backbones: patchify round trip, sine-cosine position embeddings, registry and geometry."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.models import build_backbone, list_backbones
from contrastlab.models.vit import (
    VisionTransformer,
    default_patch_size,
    patchify,
    sincos_position_embedding_2d,
    unpatchify,
)


@pytest.mark.parametrize("channels,size,patch", [(1, 8, 2), (3, 32, 4), (1, 28, 4), (1, 28, 7)])
def test_patchify_unpatchify_round_trip(channels: int, size: int, patch: int) -> None:
    images = torch.randn(2, channels, size, size)
    patches = patchify(images, patch)
    assert patches.shape == (2, (size // patch) ** 2, patch * patch * channels)
    torch.testing.assert_close(unpatchify(patches, patch, channels, size), images, rtol=0, atol=0)
    # channels_last input gives the same patches
    torch.testing.assert_close(patchify(images.contiguous(memory_format=torch.channels_last),
                                        patch), patches, rtol=0, atol=0)


def test_patch_layout_is_row_major_grid_then_row_column_channel() -> None:
    c, size, p = 2, 6, 3
    images = torch.randn(1, c, size, size)
    patches = patchify(images, p)
    grid = size // p
    for gr in range(grid):
        for gc in range(grid):
            for i in range(p):
                for j in range(p):
                    for ch in range(c):
                        assert patches[0, gr * grid + gc, (i * p + j) * c + ch] == \
                            images[0, ch, gr * p + i, gc * p + j]


def test_sincos_position_embedding_matches_formula() -> None:
    dim, grid = 8, 3
    table = sincos_position_embedding_2d(dim, grid)
    assert table.shape == (grid * grid, dim)
    quarter = dim // 4
    for index in range(grid * grid):
        row, col = index // grid, index % grid
        expected = []
        for coordinate in (row, col):
            omegas = [1 / 10000 ** (k / quarter) for k in range(quarter)]
            expected += [math.sin(coordinate * w) for w in omegas]
            expected += [math.cos(coordinate * w) for w in omegas]
        torch.testing.assert_close(table[index], torch.tensor(expected), atol=1e-6, rtol=1e-6)
    assert len({tuple(r.tolist()) for r in table}) == grid * grid  # every position distinct
    with pytest.raises(ConfigError, match="dim % 4"):
        sincos_position_embedding_2d(6, 2)


@pytest.mark.parametrize("size,patch", [(8, 2), (28, 4), (32, 4), (64, 8), (224, 16)])
def test_default_patch_size(size: int, patch: int) -> None:
    assert default_patch_size(size) == patch


@pytest.mark.parametrize("name,dim,depth,heads", [("vit-micro", 64, 2, 2),
                                                  ("vit-tiny", 192, 12, 3),
                                                  ("vit-small", 384, 12, 6)])
def test_registered_sizes(name: str, dim: int, depth: int, heads: int) -> None:
    assert name in list_backbones()
    vit = build_backbone(name, 3, image_size=32)
    assert isinstance(vit, VisionTransformer)
    assert vit.output_dim == dim and len(vit.blocks) == depth
    assert vit.blocks[0].attn.num_heads == heads
    assert vit.patch_size == 4 and vit.num_patches == 64


@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_forward_gives_cls_features(channels: int, size: int) -> None:
    vit = build_backbone("vit-micro", channels, image_size=size)
    x = torch.randn(3, channels, size, size)
    out = vit(x)
    assert out.shape == (3, 64)
    torch.testing.assert_close(out, vit.forward_tokens(vit.embed_patches(x))[:, 0])
    # channels_last (the trainer's default) changes nothing
    torch.testing.assert_close(vit(x.contiguous(memory_format=torch.channels_last)), out,
                               atol=1e-5, rtol=1e-5)


def test_mean_pooling_and_token_subsets() -> None:
    vit = VisionTransformer(1, 8, 2, dim=32, depth=1, num_heads=2, pool="mean")
    x = torch.randn(2, 1, 8, 8)
    tokens = vit.embed_patches(x)
    torch.testing.assert_close(vit(x), vit.forward_tokens(tokens)[:, 1:].mean(1))
    assert vit.forward_tokens(tokens[:, :5]).shape == (2, 6, 32)


def test_geometry_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="patch_size 5 does not divide"):
        build_backbone("vit-micro", 1, image_size=28, patch_size=5)
    with pytest.raises(ConfigError, match="image size"):
        build_backbone("vit-tiny", 1)
    vit = build_backbone("vit-micro", 1, image_size=8)
    with pytest.raises(ValueError, match="8x8"):
        vit(torch.randn(1, 1, 16, 16))


def test_reset_parameters_reinitialises() -> None:
    vit = build_backbone("vit-micro", 1, image_size=8)
    before = [p.detach().clone() for p in vit.parameters()]
    vit.reset_parameters()
    changed = [not torch.equal(a, b) for a, b in zip(before, vit.parameters(), strict=True)]
    assert sum(changed) >= len([p for p in vit.parameters() if p.ndim > 1])
