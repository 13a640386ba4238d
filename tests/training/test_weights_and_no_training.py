"""``--weights FILE`` in training (loaded before the method copies the backbone, recorded in the
model metadata) and ``--epochs 0`` (no step: the initial or loaded backbone is evaluated,
diagnosed and saved, so every other command works on the run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import load, train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import CheckpointError
from contrastlab.runs import load_checkpoint

QUIET = Console(quiet=True)


def tiny_config(out: Path, **overrides):
    values = {"data": "digits", "backbone": "convnet-small", "epochs": 1, "batch_size": 64,
              "out": str(out), "projection_hidden_dim": 32, "projection_dim": 16,
              "knn_k": 20, "seed": 3, "diagnose_every": 1}
    values.update(overrides)
    return build_config(None, values)


def backbone_of(run: Path, prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    model = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    return {k.removeprefix(prefix): v for k, v in model.items() if k.startswith(prefix)}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for 3 steps: its checkpoint is the weights file of the tests."""
    out = tmp_path_factory.mktemp("weights") / "source"
    train(tiny_config(out, diagnose_every=0), console=QUIET, stop_after_step=3)
    return out


def test_epochs_zero_with_weights_evaluates_and_saves_the_loaded_backbone(
        source_run: Path, tmp_path: Path) -> None:
    weights = source_run / "checkpoints" / "last.pt"
    out = tmp_path / "zero"
    result = train(tiny_config(out, epochs=0, weights=str(weights)), console=QUIET)
    assert result.finished and result.global_step == 0 and result.epoch == 0
    assert 0 <= result.metrics["knn_top1"] <= 1 and "linear_top1" in result.metrics
    expected = backbone_of(source_run)
    loaded = backbone_of(out)
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    meta = load_checkpoint(out / "checkpoints" / "last.pt")["model_meta"]
    assert meta["weights"]["path"] == str(weights.resolve())
    assert len(meta["weights"]["sha256"]) == 12 and meta["weights"]["tensors"] == len(expected)
    diagnostics = [r for r in records(out) if r["type"] == "diagnostics"]
    assert len(diagnostics) == 1 and diagnostics[0]["epoch"] == 0
    # every other command works on it
    assert load(out).method.backbone is not None
    knn = CliRunner().invoke(app, ["eval", "knn", "--run", str(out), "--k", "10", "--json"])
    assert knn.exit_code == 0, knn.output


def test_epochs_zero_without_weights_saves_the_initial_model(tmp_path: Path) -> None:
    out = tmp_path / "init"
    train(tiny_config(out, epochs=0, diagnose_every=0), console=QUIET, evaluate_at_end=False)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["global_step"] == 0 and state["model_meta"]["weights"] is None
    torch.manual_seed(3)  # the run's seed: the same initialisation
    from contrastlab.models import build_backbone

    fresh = build_backbone("convnet-small", 1).state_dict()
    for name, value in fresh.items():
        torch.testing.assert_close(state["model"][f"backbone.{name}"], value, rtol=0, atol=0)


def test_momentum_encoder_starts_from_the_weights_too(source_run: Path, tmp_path: Path) -> None:
    """The weights are loaded before the method is built, so MoCo v2's key encoder (a copy of
    the backbone) starts from them as well."""
    out = tmp_path / "moco"
    train(tiny_config(out, method="moco-v2", queue_size=128, epochs=0, diagnose_every=0,
                      weights=str(source_run / "checkpoints" / "last.pt")),
          console=QUIET, evaluate_at_end=False)
    online, key = backbone_of(out), backbone_of(out, "key_backbone.")
    expected = backbone_of(source_run)
    for name, value in expected.items():
        torch.testing.assert_close(online[name], value, rtol=0, atol=0)
        torch.testing.assert_close(key[name], value, rtol=0, atol=0)


def test_training_from_weights_then_resume_keeps_the_record(source_run: Path,
                                                            tmp_path: Path) -> None:
    weights = source_run / "checkpoints" / "last.pt"
    out = tmp_path / "continued"
    train(tiny_config(out, weights=str(weights), diagnose_every=0), console=QUIET,
          stop_after_step=2, evaluate_at_end=False)
    first = load_checkpoint(out / "checkpoints" / "last.pt")["model_meta"]["weights"]
    train(tiny_config(out, weights=str(weights), diagnose_every=0, resume=True), console=QUIET,
          evaluate_at_end=False)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["global_step"] > 2 and state["model_meta"]["weights"] == first


def test_weights_that_do_not_fit_are_refused_before_training(source_run: Path,
                                                             tmp_path: Path) -> None:
    weights = source_run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match=rf"weights file '{weights}' does not fit "
                       r"backbone 'convnet': \d+ of \d+ tensors matched"):
        train(tiny_config(tmp_path / "wide", backbone="convnet", weights=str(weights)),
              console=QUIET)
    with pytest.raises(CheckpointError, match="weights file '.*missing.pt' does not exist"):
        train(tiny_config(tmp_path / "missing", weights=str(tmp_path / "missing.pt")),
              console=QUIET)
