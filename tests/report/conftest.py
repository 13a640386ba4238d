"""Two tiny digits runs shared by the report tests: one with evaluation and diagnostics every
epoch, one (same seed) without diagnostics."""

from pathlib import Path

import pytest
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config

QUIET = Console(quiet=True)


def tiny_config(out: Path, **overrides):
    values = {"data": "digits", "backbone": "convnet-small", "epochs": 2, "batch_size": 64,
              "out": str(out), "projection_hidden_dim": 32, "projection_dim": 16, "log_every": 5,
              "knn_k": 20, "seed": 3, "eval_every": 1}
    values.update(overrides)
    return build_config(None, values)


@pytest.fixture(scope="session")
def diagnosed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "diagnosed"
    train(tiny_config(out, diagnose_every=1), console=QUIET)
    return out


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "plain"
    train(tiny_config(out, diagnose_every=0), console=QUIET)
    return out
