"""The one-call Python API: ``contrastlab.train(...)`` with the command line's names,
``contrastlab.load(run)``, and any ``nn.Module`` as the backbone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from torch import nn

import contrastlab
from contrastlab.config import TrainConfig
from contrastlab.data import load_dataset
from contrastlab.errors import CheckpointError, ConfigError

QUIET = Console(quiet=True)
TINY = {"data": "digits", "backbone": "convnet-small", "epochs": 1, "batch_size": 64,
        "projection_hidden_dim": 32, "knn_k": 20, "diagnose_every": 0}


def test_import_contrastlab_shows_train_and_load() -> None:
    assert {"train", "load", "TrainConfig", "build_config"} <= set(dir(contrastlab))
    assert contrastlab.TrainConfig is TrainConfig
    assert callable(contrastlab.train) and callable(contrastlab.load)


def test_train_with_keywords_evaluates_and_load_embeds(tmp_path: Path) -> None:
    result = contrastlab.train(**TINY, out=str(tmp_path / "run"), console=QUIET)
    assert set(result.metrics) >= {"knn_top1", "linear_top1", "epoch", "step"}
    assert result.finished and result.run_dir == tmp_path / "run"
    encoder = contrastlab.load(tmp_path / "run")
    images = load_dataset("digits").test.images[:10]
    embeddings = encoder.embed(images)
    assert embeddings.shape == (10, encoder.method.feature_dim)
    assert embeddings.dtype == torch.float32
    with torch.no_grad():
        direct = encoder.method.encode(encoder.transform(images))
    torch.testing.assert_close(embeddings, direct)


def test_keywords_and_flags_give_the_same_configuration(tmp_path: Path) -> None:
    """The API's keywords are the CLI's options with underscores: the same values write the
    same resolved config.yaml."""
    contrastlab.train(**TINY, temperature=0.3, crop_scale=(0.2, 1.0), out=str(tmp_path / "api"),
                      console=QUIET, evaluate_at_end=False)
    flags = ["--data", "digits", "--backbone", "convnet-small", "--epochs", "1",
             "--batch-size", "64", "--projection-hidden-dim", "32", "--knn-k", "20",
             "--diagnose-every", "0", "--temperature", "0.3", "--crop-scale", "0.2,1.0"]
    completed = subprocess.run([sys.executable, "-m", "contrastlab", "train", *flags, "--out",
                                str(tmp_path / "cli")], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    api = yaml.safe_load((tmp_path / "api" / "config.yaml").read_text())
    cli = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    api["run"].pop("out"), cli["run"].pop("out")
    assert api == cli
    assert api["method"] == {"name": "simclr", "temperature": 0.3, "projection_dim": 128,
                             "projection_hidden_dim": 32, "projection_layers": 2,
                             "loss_chunk_size": None}


class TinyEncoder(nn.Module):
    """A user's own backbone: any module with an integer ``output_dim``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.output_dim = 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def test_any_module_is_a_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TinyEncoder()
    settings = {k: v for k, v in TINY.items() if k != "backbone"}
    result = contrastlab.train(**settings, out=str(tmp_path / "run"), backbone=module,
                               console=QUIET)
    assert "knn_top1" in result.metrics
    with pytest.raises(CheckpointError, match="backbone module given from Python"):
        contrastlab.load(tmp_path / "run")
    loaded = contrastlab.load(tmp_path / "run", backbone=TinyEncoder())
    images = load_dataset("digits").test.images[:4]
    assert loaded.embed(images).shape == (4, 8)
    trained = module.net[0].weight.detach()
    torch.testing.assert_close(loaded.method.backbone.net[0].weight.detach(), trained)


def test_a_module_without_output_dim_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="output_dim"):
        contrastlab.train(data="digits", epochs=1, out=str(tmp_path / "run"),
                          backbone=nn.Linear(4, 4), console=QUIET)


def test_config_and_keywords_are_not_mixed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either a TrainConfig or settings"):
        contrastlab.train(TrainConfig(), epochs=3)
