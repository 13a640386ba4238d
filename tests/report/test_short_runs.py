"""A run that ends inside its first epoch (a short time budget) is diagnosed at its end, and the
report says how far it got (steps and the fraction of an epoch) and why a section is empty."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

import contrastlab
from contrastlab.report.records import read_run
from contrastlab.report.sections import training_length, why_no_diagnostics

QUIET = Console(quiet=True)
TINY = {"data": "digits", "backbone": "convnet-small", "batch_size": 64,
        "projection_hidden_dim": 32, "knn_k": 20}


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_a_budget_ending_mid_epoch_is_diagnosed_and_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = contrastlab.train(**TINY, time_budget=0.001, out=str(run), console=QUIET)
    assert result.finished and result.global_step == 1 and result.epoch == 0
    diagnosed = records(run, "diagnostics")
    assert [r["step"] for r in diagnosed] == [1]  # at the end, though no epoch ended
    text = training_length(read_run(run))
    assert text.startswith("0.05 epochs (1 steps) of a 0 s budget"), text  # 1 of 22 steps


def test_empty_sections_say_why(tmp_path: Path) -> None:
    off = tmp_path / "off"
    contrastlab.train(**TINY, epochs=1, diagnose_every=0, out=str(off), console=QUIET)
    assert "diagnostics were off for this run (--diagnose-every 0)" in why_no_diagnostics(
        read_run(off))
    stopped = tmp_path / "stopped"
    contrastlab.train(**TINY, epochs=2, out=str(stopped), console=QUIET, stop_after_step=3)
    reason = why_no_diagnostics(read_run(stopped))
    assert "stopped after 0.14 epochs (3 steps) of 2 planned, before its first diagnosed" in reason
