import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.models import ProjectionHead, build_backbone, list_backbones


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 8)])
def test_convnet_shapes(channels: int, size: int) -> None:
    net = build_backbone("convnet", channels)
    out = net(torch.randn(4, channels, size, size))
    assert out.shape == (4, net.output_dim)


@pytest.mark.parametrize("name,last_stage", [("convnet-small-x256", 64), ("convnet-x256", 128)])
def test_expanded_convnet_pools_centred_features_of_the_wider_layer(name: str,
                                                                    last_stage: int) -> None:
    net = build_backbone(name, 1)
    assert net.output_dim == 256
    relu, conv, norm = list(net.features)[-3:]  # ... ReLU, 1x1 conv, BN (no final ReLU)
    assert isinstance(relu, torch.nn.ReLU) and isinstance(norm, torch.nn.BatchNorm2d)
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (last_stage, 256)
    torch.manual_seed(0)
    out = net(torch.randn(64, 1, 28, 28))
    assert out.shape == (64, 256)
    assert (out < 0).any()  # no final ReLU: pooled batch-normalised values, centred per channel
    assert out.mean(0).abs().max() < 1e-4  # training-mode BN, no spatial bias: zero batch mean


@pytest.mark.parametrize("name", ["resnet18-cifar", "resnet18", "resnet50-cifar"])
def test_resnets_accept_small_grey_and_colour_images(name: str) -> None:
    for channels in (1, 3):
        net = build_backbone(name, channels).eval()
        with torch.no_grad():
            out = net(torch.randn(2, channels, 32, 32))
        assert out.shape == (2, net.output_dim)
    assert build_backbone("resnet50", 3).output_dim == 2048


def test_cifar_variant_keeps_resolution_in_stem() -> None:
    net = build_backbone("resnet18-cifar", 3)
    assert net.net.conv1.kernel_size == (3, 3) and net.net.conv1.stride == (1, 1)
    assert isinstance(net.net.maxpool, torch.nn.Identity)


def test_unknown_backbone_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_backbone("resnet81", 3)
    assert "convnet" in list_backbones()


def test_projection_head_is_two_layer_mlp_with_bn() -> None:
    head = ProjectionHead(64, 32, 16)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(linears) == 2 and len(norms) == 2
    assert head(torch.randn(5, 64)).shape == (5, 16)
