"""SwAV (with its queue and frozen prototypes) and DINO (teacher, centre) resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.runs.checkpoint import load_checkpoint

QUIET = Console(quiet=True)
SETTINGS = {
    "swav": {"queue_size": 256, "num_prototypes": 16, "freeze_prototypes_steps": 5},
    "dino": {"num_prototypes": 16, "freeze_prototypes_steps": 5},
}


def config(method: str, out: Path, resume: bool = False):
    return build_config(None, {
        "method": method, "data": "digits", "backbone": "convnet-small", "epochs": 1,
        "batch_size": 128, "out": str(out), "seed": 0, "resume": resume, "num_local_crops": 2,
        "projection_dim": 8, "projection_hidden_dim": 16, **SETTINGS[method],
    })


@pytest.mark.parametrize("method", ["swav", "dino"])
def test_stop_and_resume_gives_the_same_state(tmp_path: Path, method: str) -> None:
    train(config(method, tmp_path / "straight"), console=QUIET, evaluate_at_end=False)
    train(config(method, tmp_path / "resumed"), console=QUIET, stop_after_step=6)
    train(config(method, tmp_path / "resumed", resume=True), console=QUIET,
          evaluate_at_end=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    expected = {"swav": "queues.0.features", "dino": "criterion.center"}[method]
    assert expected in a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
