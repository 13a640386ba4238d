"""Diagnostics during training: records per epoch, no effect on training, the alarm's records."""

import json
from pathlib import Path

import torch
from rich.console import Console

from contrastlab.data import load_dataset
from contrastlab.eval.diagnostics_callback import EpochDiagnostics
from contrastlab.runs import load_checkpoint
from contrastlab.runs.directory import RunDirectory
from contrastlab.views import AugmentedViews, channel_stats


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_every_epoch_is_diagnosed_in_both_spaces(diagnosed_run: Path) -> None:
    diagnosed = records(diagnosed_run, "diagnostics")
    assert [r["epoch"] for r in diagnosed] == [1, 2]
    for record in diagnosed:
        assert record["projector"]["dim"] == 16 and record["projector"]["n"] == 1437
        assert len(record["backbone"]["spectrum"]) == record["backbone"]["dim"]
        assert 0.0 <= record["projector"]["alignment"] <= 4.0
    assert records(diagnosed_run, "alarm") == []  # a healthy run raises no alarm


def test_diagnostics_do_not_change_training(diagnosed_run: Path, plain_run: Path) -> None:
    assert records(plain_run, "diagnostics") == []
    with_diagnostics = load_checkpoint(diagnosed_run / "checkpoints" / "last.pt")["model"]
    without = load_checkpoint(plain_run / "checkpoints" / "last.pt")["model"]
    for key, value in without.items():
        assert torch.equal(value, with_diagnostics[key]), key


class Constant(torch.nn.Module):
    """A completely collapsed 'method': every image gets the same embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.point = torch.nn.Parameter(torch.randn(32))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.point.expand(len(images), -1) + 0 * images.mean()

    project = encode


def test_a_collapsed_model_logs_an_alarm_and_says_it(tmp_path: Path) -> None:
    images = load_dataset("digits").train.images[:200]
    mean, std = channel_stats(images)
    hook = EpochDiagnostics(images, AugmentedViews(8, 1, mean, std), torch.device("cpu"),
                            torch.contiguous_format, "simclr", seed=0)
    run = RunDirectory(tmp_path)
    console = Console(record=True, width=200)
    method = Constant()
    hook(method, 1, 10, 0.05, run.log, console.print)  # in the grace period: not counted
    hook(method, 2, 20, 0.2, run.log, console.print)
    hook(method, 3, 30, 0.3, run.log, console.print)
    alarms = records(tmp_path, "alarm")
    assert len(records(tmp_path, "diagnostics")) == 3
    assert len(alarms) == 1 and alarms[0]["epoch"] == 3 and alarms[0]["kind"] == "complete"
    assert alarms[0]["message"].startswith("complete collapse in 2 evaluations in a row "
                                           "(epochs 2, 3)")
    assert "collapse alarm: complete collapse" in console.export_text()
