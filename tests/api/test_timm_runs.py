"""A run on a timm backbone trains, reloads (``contrastlab.load``, ``eval knn --run``) and
exports to ONNX like any other run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import contrastlab
from contrastlab.cli import app
from contrastlab.data import load_dataset

pytest.importorskip("timm")

QUIET = Console(quiet=True)
TINY = {"data": "digits", "epochs": 1, "batch_size": 64, "projection_hidden_dim": 32,
        "knn_k": 20, "diagnose_every": 0}
runner = CliRunner()


@pytest.fixture(scope="module")
def timm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timm_runs")
    runs = {"resnet": root / "resnet", "vit": root / "vit"}
    contrastlab.train(**TINY, backbone="timm:test_resnet", out=str(runs["resnet"]),
                      console=QUIET, stop_after_step=2, evaluate_at_end=False)
    contrastlab.train(**TINY, backbone="timm:test_vit", patch_size=2, out=str(runs["vit"]),
                      console=QUIET, stop_after_step=2, evaluate_at_end=False)
    return runs


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_timm_run_reloads_the_trained_weights(timm_runs: dict[str, Path], kind: str) -> None:
    loaded = contrastlab.load(timm_runs[kind])
    saved = torch.load(timm_runs[kind] / "checkpoints" / "last.pt", weights_only=True)
    for name, value in loaded.method.state_dict().items():
        torch.testing.assert_close(value, saved["model"][name], rtol=0, atol=0)
    assert loaded.meta["backbone"] == f"timm:test_{kind}"
    assert loaded.meta["backbone_options"]["image_size"] == 8
    images = load_dataset("digits").test.images[:5]
    assert loaded.embed(images).shape == (5, loaded.method.feature_dim)


def test_eval_knn_on_a_timm_run(timm_runs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["eval", "knn", "--run", str(timm_runs["resnet"]), "--k", "10",
                                 "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert 0 <= json.loads(result.stdout)["knn_top1"] <= 1


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_export_a_timm_run_to_onnx(timm_runs: dict[str, Path], kind: str) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    result = runner.invoke(app, ["export", "--run", str(timm_runs[kind]), "--format", "onnx"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "parity: passed" in result.output
    assert (timm_runs[kind] / "export" / "encoder.onnx").is_file()


def test_multi_crop_with_a_fixed_size_timm_model_is_refused(tmp_path: Path) -> None:
    from contrastlab.errors import ConfigError

    with pytest.raises(ConfigError, match="built for 8x8 images only.*--num-local-crops 0"):
        contrastlab.train(data="digits", method="dino", backbone="timm:test_vit", patch_size=2,
                          epochs=1, out=str(tmp_path / "run"), console=QUIET)
