"""``--backbone timm:<name>``: any timm model (random init, no classifier) as the backbone.

Uses timm's own tiny test architectures (``test_resnet``, ``test_vit``) so nothing is large and
nothing is downloaded.
"""

from __future__ import annotations

import sys

import pytest
import torch

from contrastlab.config import TrainConfig
from contrastlab.errors import ConfigError
from contrastlab.models import build_backbone
from contrastlab.models.backbones import takes_geometry

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("channels", [1, 3])
def test_timm_convnet_pools_features_of_its_width_at_any_size(channels: int) -> None:
    net = build_backbone("timm:test_resnet", channels)
    assert net.fixed_image_size is None
    assert net.output_dim == timm.create_model("test_resnet", num_classes=0).num_features
    for size in (8, 32):
        assert net(torch.randn(2, channels, size, size)).shape == (2, net.output_dim)


def test_output_dim_is_the_pooled_width_also_with_a_pre_logits_layer() -> None:
    """MobileNetV3's pooled output goes through a 1x1 'head' convolution: its width is
    head_hidden_size, not num_features."""
    net = build_backbone("timm:mobilenetv3_small_050", 3)
    assert net.output_dim == net.model.head_hidden_size != net.model.num_features
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.output_dim)


def test_timm_vit_is_built_for_the_image_and_patch_size() -> None:
    net = build_backbone("timm:test_vit", 1, image_size=8, patch_size=2)
    assert net.fixed_image_size == 8
    assert net.model.patch_embed.patch_size == (2, 2)
    assert net.model.patch_embed.grid_size == (4, 4)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, net.output_dim)
    assert takes_geometry("timm:test_vit") and takes_geometry("timm:test_resnet")


def test_initialisation_follows_the_torch_seed() -> None:
    torch.manual_seed(3)
    first = build_backbone("timm:test_resnet", 1).state_dict()
    torch.manual_seed(3)
    second = build_backbone("timm:test_resnet", 1).state_dict()
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=0)


def test_unknown_timm_name_lists_close_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnt18'.*timm:resnet18"):
        build_backbone("timm:resnt18", 3)
    with pytest.raises(ConfigError, match="names no model"):
        build_backbone("timm:", 3)


def test_geometry_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="does not take a patch size"):
        build_backbone("timm:test_resnet", 3, image_size=32, patch_size=4)
    with pytest.raises(ConfigError, match="cannot encode them.*--patch-size"):
        build_backbone("timm:test_vit", 3, image_size=8, patch_size=16)


def test_config_accepts_timm_names_and_checks_them_before_any_data() -> None:
    config = TrainConfig.from_dict({"backbone": "timm:test_vit", "patch_size": 2})
    assert config.backbone.name == "timm:test_vit" and config.backbone.patch_size == 2
    with pytest.raises(ConfigError, match="unknown timm model"):
        TrainConfig.from_dict({"backbone": "timm:not_a_model_at_all"})
    with pytest.raises(ConfigError, match="timm:<name> for any timm model"):
        TrainConfig.from_dict({"backbone": "resnet81"})


def test_missing_timm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ConfigError, match="pip install timm"):
        TrainConfig.from_dict({"backbone": "timm:resnet18"})
    TrainConfig.from_dict({"backbone": "convnet"})  # other backbones do not need it
