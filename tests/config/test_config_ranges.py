"""Bad configuration is refused before any data is read, with a message naming the key and what
is allowed: out-of-range and non-finite values, wrong types, and incompatible combinations.
(tests/config/test_config.py has the basic cases; --label-fraction is tested with the eval
commands in tests/cli/test_eval_commands.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import ConfigError


@pytest.mark.parametrize(("values", "message"), [
    ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ({"method": "dino", "teacher_temperature": 0}, "teacher_temperature must be > 0, got 0.0"),
    ({"momentum": -0.1}, r"momentum must be in \[0, 1\), got -0.1"),
    ({"method": "byol", "ema_momentum": 1.0}, r"ema_momentum must be in \[0, 1\), got 1.0"),
    ({"method": "dino", "center_momentum": -0.5}, r"center_momentum must be in \[0, 1\)"),
    ({"method": "moco-v2", "queue_size": 32, "batch_size": 64},
     r"queue_size 32 is smaller than the batch \(64\).*--queue-size 64 or more"),
    ({"method": "moco-v2", "queue_size": -1}, r"queue_size must be >= 0"),
    ({"crop_scale": "0.5,1.5"}, r"crop_scale must be two numbers with 0 < min <= max <= 1"),
    ({"crop_scale": "0,1"}, r"crop_scale must be two numbers with 0 < min <= max <= 1"),
    ({"method": "dino", "local_crop_scale": "0.5,2"}, r"local_crop_scale .* <= 1"),
    ({"method": "dino", "image_size": 32, "local_crop_size": 40},
     r"local_crop_size 40 is larger than image_size 32; it must be in 1\.\.32"),
    ({"lr": "nan"}, "lr must be a finite number, got nan"),
    ({"lr": float("inf")}, "lr must be a finite number, got inf"),
    ({"jitter_strength": float("nan")}, "jitter_strength must be a finite number"),
    ({"time_budget": "inf"}, "time_budget must be a finite number"),
    ({"warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\)"),
    ({"test_fraction": 0}, r"test_fraction must be in \(0, 1\), got 0.0"),
    ({"method": "mae", "backbone": "vit-micro", "mask_ratio": 1.0},
     r"mask_ratio must be in \(0, 1\), got 1.0"),
    ({"knn_temperature": 0}, "knn_temperature must be > 0"),
    ({"image_size": 2}, "image_size must be >= 4 pixels, got 2"),
    ({"rotation": -5}, r"rotation is in degrees and must be in \[0, 180\], got -5.0"),
    ({"rotation": 270}, r"rotation is in degrees and must be in \[0, 180\]"),
])
def test_out_of_range_values_name_the_key_and_the_range(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(None, values)


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": "fast"}, "lr in configuration must be of type float, got 'fast'"),
    ({"epochs": 2.5}, "epochs in configuration must be of type int, got 2.5"),
    ({"method": "byol", "ema_cosine": "maybe"}, "ema_cosine in .* must be of type bool"),
    ({"temperature": [0.1, 0.2]}, "temperature in .* must be of type float"),
    ({"crop_scale": "0.2"}, r"crop_scale in .* must be 2 numbers \(e\.g\. 0\.08,1\.0\)"),
    ({"data": 5}, "data in .* must be of type str"),
])
def test_wrong_types_name_the_key_and_the_type(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(None, values)


def test_wrong_type_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: sixty-four\n")
    with pytest.raises(ConfigError, match=r"batch_size in config file '.*c\.yaml' must be of type "
                                          r"int, got 'sixty-four'"):
        build_config(path)


@pytest.mark.parametrize(("values", "message"), [
    ({"method": "simclr", "num_local_crops": 2},
     r"method 'simclr' cannot use multi-crop views \(num_local_crops=2\); methods that can: "
     r".*dino"),
    ({"method": "simclr", "queue_size": 4096},
     r"queue_size is not a setting of method 'simclr'; it is used by .*moco-v2"),
    ({"method": "byol", "temperature": 0.1}, "temperature is not a setting of method 'byol'"),
])
def test_incompatible_combinations_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(None, values)


@pytest.mark.parametrize("flags", [
    ["--temperature", "0"], ["--method", "byol", "--ema-momentum", "1"],
    ["--crop-scale", "0.2,1.5"],
    ["--method", "moco-v2", "--queue-size", "16", "--batch-size", "32"], ["--lr", "nan"],
])
def test_refused_before_any_data_is_read_or_folder_made(tmp_path: Path, flags: list[str]) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out",
                                      str(out), *flags])
    assert isinstance(result.exception, ConfigError), result.output  # not the missing data
    assert not out.exists()


def flat_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(("method", "message"), [
    ("supcon", "method 'supcon' uses labels but .* has none; .*use --method simclr"),
    ("supervised", "method 'supervised' needs labels but .* has none"),
])
def test_label_methods_refuse_unlabelled_data(tmp_path: Path, method: str, message: str) -> None:
    config = build_config(None, {"method": method, "data": str(flat_folder(tmp_path / "d")),
                                 "batch_size": 4, "backbone": "convnet-small",
                                 "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=message):
        train(config, console=Console(quiet=True))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_local_crops_larger_than_the_data_are_refused(tmp_path: Path) -> None:
    config = build_config(None, {"method": "dino", "data": str(flat_folder(tmp_path / "d")),
                                 "batch_size": 4, "backbone": "convnet-small",
                                 "local_crop_size": 7, "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=re.escape("local_crop_size 7 is larger than the image "
                                                    "size 6")):
        train(config, console=Console(quiet=True))
