"""The training loop on tiny data: a full run, resume continuing exactly, the time budget."""

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.optim import warmup_cosine
from contrastlab.runs import load_checkpoint

QUIET = Console(quiet=True)


def tiny_config(out: Path, **overrides):
    values = {"data": "digits", "backbone": "convnet-small", "epochs": 2, "batch_size": 64,
              "out": str(out), "projection_hidden_dim": 32, "projection_dim": 16, "log_every": 2,
              "knn_k": 20, "seed": 3}
    values.update(overrides)
    return build_config(None, values)


def parameters(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_full_run_writes_run_directory_and_scores(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", eval_every=1), console=QUIET)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["type"] for r in records}
    assert {"step", "epoch", "eval", "final"} <= kinds
    steps = [r for r in records if r["type"] == "step"]
    assert all({"loss", "lr", "images_per_s"} <= r.keys() for r in steps)
    final = json.loads((run / "final_metrics.json").read_text())
    assert 0.0 <= final["knn_top1"] <= 1.0 and 0.0 <= final["linear_top1"] <= 1.0
    assert final["n_train"] + final["n_test"] == 1797
    assert result.epoch == 2
    # even two tiny epochs beat chance (10%) clearly
    assert final["knn_top1"] > 0.3


@pytest.mark.parametrize("stop_after_step", [22, 30])  # epoch boundary (22 = 1 epoch) and mid-epoch
def test_resume_continues_identically(tmp_path: Path, stop_after_step: int) -> None:
    straight = tmp_path / "straight"
    train(tiny_config(straight), console=QUIET, evaluate_at_end=False)
    resumed = tmp_path / "resumed"
    partial = train(tiny_config(resumed), console=QUIET, stop_after_step=stop_after_step)
    assert not partial.finished and partial.global_step == stop_after_step
    train(tiny_config(resumed, resume=True), console=QUIET, evaluate_at_end=False)
    a, b = parameters(straight), parameters(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    sa = load_checkpoint(straight / "checkpoints" / "last.pt")
    sb = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert sa["global_step"] == sb["global_step"] and sa["epoch"] == sb["epoch"]


def test_refuses_to_overwrite_or_resume_nothing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="--resume given but"):
        train(tiny_config(tmp_path / "none", resume=True), console=QUIET)
    train(tiny_config(tmp_path / "run", epochs=1), console=QUIET, evaluate_at_end=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(tiny_config(tmp_path / "run", epochs=1), console=QUIET)
    with pytest.raises(CheckpointError, match="batch_size=64 but this run asks for batch_size=32"):
        train(tiny_config(tmp_path / "run", batch_size=32, resume=True), console=QUIET)


def test_batch_larger_than_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(tiny_config(tmp_path / "run", batch_size=5000), console=QUIET)


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        train(tiny_config(blocker / "run"), console=QUIET)


def test_time_budget_ends_training_and_lays_schedule_over_it(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", epochs=1000, time_budget=3.0, log_every=1),
                   console=QUIET,
                   evaluate_at_end=False)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    # the budget is spent (the last checkpoint's own write time, which can be what crosses the
    # budget at an epoch's end, is counted after it is written, so its record may be a little short)
    assert 2.5 <= state["elapsed"] < 60 and result.finished
    assert result.epoch < 1000
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text()
           .splitlines() if json.loads(line)["type"] == "step"]
    assert max(lrs) > lrs[-1]  # the cosine has decayed by the end of the budget


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0.0, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0)
    assert warmup_cosine(2.0, 0.0) == pytest.approx(0.0)
