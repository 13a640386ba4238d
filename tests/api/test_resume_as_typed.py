"""``contrastlab train --resume --out RUN`` (the form the README and the SIGTERM message give)
takes the run's saved settings: flags that agree are accepted, flags that would make it another
run are refused with a message naming them, and a refused resume writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import contrastlab
from contrastlab.api import resolve_config
from contrastlab.errors import CheckpointError
from contrastlab.runs import load_checkpoint

QUIET = Console(quiet=True)
STARTED = {"data": "digits", "backbone": "convnet-small", "epochs": 2, "batch_size": 64,
           "projection_hidden_dim": 32, "temperature": 0.3, "seed": 3, "diagnose_every": 0}


@pytest.fixture
def stopped_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    contrastlab.train(**STARTED, out=str(out), console=QUIET, stop_after_step=3)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "120"})


def test_resume_takes_the_runs_own_settings(stopped_run: Path) -> None:
    config = resolve_config({"resume": True, "out": str(stopped_run)})
    assert config.schedule.batch_size == 64 and config.run.seed == 3
    assert config.method.temperature == 0.3 and config.backbone.name == "convnet-small"
    agreeing = resolve_config({"resume": True, "out": str(stopped_run), "batch_size": 64,
                               "epochs": 3})  # same batch; a longer schedule may be asked
    assert agreeing.schedule.epochs == 3


def test_resume_as_typed_finishes_the_run(stopped_run: Path) -> None:
    result = cli("train", "--resume", "--out", str(stopped_run))
    assert result.returncode == 0, result.stderr
    state = load_checkpoint(stopped_run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["global_step"] == 2 * (1437 // 64)


def test_a_conflicting_flag_is_refused_and_nothing_is_written(stopped_run: Path) -> None:
    metrics = (stopped_run / "metrics.jsonl").read_bytes()
    checkpoint = (stopped_run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"batch_size=64 but this run asks for "
                                              r"batch_size=128.*leave out --batch-size"):
        resolve_config({"resume": True, "out": str(stopped_run), "batch_size": 128})
    result = cli("train", "--resume", "--out", str(stopped_run), "--temperature", "0.5")
    assert result.returncode == 2, result.stderr
    assert "temperature=0.3 but this run asks for temperature=0.5" in " ".join(
        result.stderr.split())
    result = cli("train", "--resume", "--out", str(stopped_run), "--seed", "4")
    assert result.returncode == 2
    assert "seed=3 but this run asks for seed=4" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert (stopped_run / "metrics.jsonl").read_bytes() == metrics
    assert (stopped_run / "checkpoints" / "last.pt").read_bytes() == checkpoint


def test_resume_without_a_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; drop --resume"):
        resolve_config({"resume": True, "out": str(tmp_path / "none")})
