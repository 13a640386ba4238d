from pathlib import Path

import pytest

from contrastlab.config import TrainConfig, build_config
from contrastlab.errors import ConfigError


def test_defaults_are_valid() -> None:
    config = TrainConfig()
    assert config.method.name == "simclr" and config.data.source == "digits"


def test_yaml_and_flags_combine_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nbatch_size: 64\ntemperature: 0.2\ncrop_scale: [0.2, 1.0]\n")
    config = build_config(path, {"epochs": 5, "batch_size": None})
    assert config.schedule.epochs == 5  # flag wins
    assert config.schedule.batch_size == 64  # from YAML (flag not given)
    assert config.method.temperature == 0.2
    assert config.views.crop_scale == (0.2, 1.0)


def test_unknown_yaml_key_suggests_closest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("temprature: 0.2\n")
    with pytest.raises(ConfigError, match="unknown key 'temprature'.*Did you mean 'temperature'"):
        build_config(path)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"temperature": -0.1}, "temperature must be > 0, got -0.1"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"epochs": -1}, "epochs must be >= 0"),
        ({"method": "simclrr"}, "unknown method 'simclrr'.*simclr"),
        ({"backbone": "resnet"}, "unknown backbone 'resnet'"),
        ({"test_fraction": 1.5}, r"test_fraction must be in \(0, 1\)"),
        ({"crop_scale": "0.5,0.1"}, "crop_scale"),
        ({"grey_p": 2}, "grey_p is a probability"),
        ({"optimizer": "adam"}, "unknown optimizer 'adam'"),
        ({"epochs": "ten"}, "epochs in .* must be of type int"),
        ({"batch_size": True}, "batch_size in .* must be of type int"),
        ({"device": "tpu"}, "device must be"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"time_budget": -5}, "time_budget must be >= 0"),
    ],
)
def test_out_of_range_values_are_rejected_with_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(None, overrides)


def test_bad_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(path)
    path.write_text("epochs: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(path)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = build_config(None, {"epochs": 7, "crop_scale": "0.3,0.9", "lr": 0.01})
    config.save_yaml(tmp_path / "saved.yaml")
    again = build_config(tmp_path / "saved.yaml")
    assert again == config


def test_a_time_budget_of_zero_lifts_the_recipes_budget() -> None:
    recipe = {"time_budget": 600, "epochs": 100}
    assert build_config(None, {}, recipe=recipe).schedule.time_budget == 600
    lifted = build_config(None, {"time_budget": 0, "epochs": 2}, recipe=recipe)
    assert lifted.schedule.time_budget is None and lifted.schedule.epochs == 2
    assert build_config(None, {"time_budget": "0"}).schedule.time_budget is None
