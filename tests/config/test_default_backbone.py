"""A method may declare the backbone it needs (``Method.default_backbone``): MAE trains a ViT when
no layer (flag, YAML file, recipe, keyword) names a backbone, says so, and the resolved
config.yaml shows it; a backbone the user names is used (and a ConvNet refused by MAE)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import contrastlab
from contrastlab.api import resolve_config
from contrastlab.config import TrainConfig, build_config
from contrastlab.errors import ConfigError
from contrastlab.methods import METHODS


def test_mae_without_a_backbone_gets_its_vit_and_a_note() -> None:
    config = TrainConfig.from_dict({"method": "mae"})
    assert config.backbone.name == METHODS["mae"].default_backbone == "vit-tiny"
    assert config.notes == ("no backbone given: method 'mae' uses its default, vit-tiny "
                            "(choose another with --backbone)",)
    assert config.to_dict()["backbone"]["name"] == "vit-tiny"
    with_patch = TrainConfig.from_dict({"method": "mae", "patch_size": 2})
    assert with_patch.backbone.patch_size == 2  # the ViT's settings apply to the chosen ViT


def test_methods_without_a_default_keep_the_general_one() -> None:
    config = TrainConfig.from_dict({"method": "simclr"})
    assert config.backbone.name == "convnet" and config.notes == ()
    assert all(cls.default_backbone is None for name, cls in METHODS.items() if name != "mae")


@pytest.mark.parametrize("layer", ["flag", "yaml", "nested_yaml"])
def test_a_backbone_given_in_any_layer_wins(tmp_path: Path, layer: str) -> None:
    path = tmp_path / "c.yaml"
    if layer == "flag":
        config = build_config(None, {"method": "mae", "backbone": "vit-micro"})
    else:
        values = ({"backbone": "vit-micro"} if layer == "yaml"
                  else {"backbone": {"name": "vit-micro"}})
        path.write_text(yaml.safe_dump(values))
        config = build_config(path, {"method": "mae"})
    assert config.backbone.name == "vit-micro" and config.notes == ()


def test_a_recipe_backbone_wins() -> None:
    config = TrainConfig.from_layers([({"backbone": "vit-small"}, "recipe 'x'"),
                                      ({"method": "mae"}, "configuration")])
    assert config.backbone.name == "vit-small" and config.notes == ()


def test_an_explicit_convnet_is_still_refused_by_mae(tmp_path: Path) -> None:
    config = resolve_config({"method": "mae", "backbone": "convnet", "data": "digits",
                             "epochs": 0, "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="method 'mae' needs a Vision Transformer backbone"):
        contrastlab.train(config, console=Console(quiet=True))


def test_training_output_and_config_yaml_show_the_chosen_backbone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    text = io.StringIO()
    contrastlab.train(method="mae", data="digits", epochs=0, diagnose_every=0, out=str(out),
                      console=Console(file=text, width=200), evaluate_at_end=False)
    assert "no backbone given: method 'mae' uses its default, vit-tiny" in text.getvalue()
    assert "training mae / vit-tiny" in text.getvalue()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["backbone"]["name"] == "vit-tiny"
    # resuming takes the saved backbone: no second note
    assert resolve_config({"resume": True, "out": str(out)}).notes == ()
