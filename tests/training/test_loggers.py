"""Loggers copy metrics.jsonl's records to TensorBoard, MLflow and Weights & Biases (real
packages, local files only); a tracker that is not installed is a clear error before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import contrastlab
from contrastlab.errors import ConfigError
from contrastlab.training.loggers import make_loggers, scalars

QUIET = Console(quiet=True)
TINY = {"data": "digits", "backbone": "convnet-small", "epochs": 2, "batch_size": 128,
        "projection_hidden_dim": 32, "knn_k": 20, "diagnose_every": 1, "log_every": 2}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_scalars_of_each_record_type() -> None:
    assert scalars({"type": "step", "step": 4, "epoch": 0, "loss": 2.5, "lr": 0.1,
                    "time": 1.0}) == {"train/loss": 2.5, "train/lr": 0.1}
    assert scalars({"type": "diagnostics", "step": 9, "projector": {"rank": 3.0, "dim": 16},
                    "backbone": {"rank": float("nan")}}) == {
        "diagnostics/projector/rank": 3.0, "diagnostics/projector/dim": 16.0}
    assert scalars({"type": "data", "n_train": 5}) == {}


def test_tensorboard_gets_every_step_record(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    contrastlab.train(**TINY, out=str(run), log_to="tensorboard", console=QUIET)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = [r for r in records(run) if r["type"] == "step"]
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [r["step"] for r in steps]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in steps])
    final = next(r for r in records(run) if r["type"] == "final")
    assert events.Scalars("final/knn_top1")[0].value == pytest.approx(final["knn_top1"])
    assert "diagnostics/projector/effective_rank" in events.Tags()["scalars"]


def test_mlflow_gets_the_settings_and_the_metrics(tmp_path: Path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is a dev dependency")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    contrastlab.train(**TINY, out=str(run), log_to="mlflow", console=QUIET)
    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(found) == 1
    logged = found[0]
    assert logged.data.params["batch_size"] == "128" and logged.data.params["method"] == "simclr"
    history = mlflow.tracking.MlflowClient().get_metric_history(logged.info.run_id, "train/loss")
    steps = [r for r in records(run) if r["type"] == "step"]
    assert [m.step for m in history] == [r["step"] for r in steps]
    assert logged.info.status == "FINISHED"


class FakeWandbRun:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []
        self.finished = False

    def log(self, values: dict, step: int) -> None:
        self.logged.append((values, step))

    def finish(self) -> None:
        self.finished = True


def test_wandb_gets_the_config_and_history(tmp_path: Path, monkeypatch) -> None:
    import sys
    import types

    made: list[FakeWandbRun] = []
    inits: list[dict] = []

    def init(**options):
        inits.append(options)
        made.append(FakeWandbRun())
        return made[-1]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    run = tmp_path / "run"
    contrastlab.train(**TINY, out=str(run), log_to="wandb", console=QUIET)
    assert inits[0]["config"]["batch_size"] == 128 and inits[0]["dir"] == str(run)
    logged = made[0].logged
    steps = [r for r in records(run) if r["type"] == "step"]
    assert [v["train/loss"] for v, _ in logged if "train/loss" in v] == pytest.approx(
        [r["loss"] for r in steps])
    assert [s for _, s in logged] == sorted(s for _, s in logged)  # W&B wants rising steps
    assert made[0].finished


def test_wandb_offline_for_real(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is a dev dependency")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    contrastlab.train(**{**TINY, "epochs": 1}, out=str(run), log_to="wandb", console=QUIET,
                      evaluate_at_end=False)
    assert list((run / "wandb").glob("offline-run-*/*.wandb"))


def test_a_missing_tracker_is_named_before_training(monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def no_mlflow(name, *args):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_mlflow)
    with pytest.raises(ConfigError, match="pip install mlflow"):
        make_loggers(["mlflow"])


def test_an_unknown_logger_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'.*tensorboard"):
        contrastlab.build_config(None, {"log_to": "tensorbord"})
