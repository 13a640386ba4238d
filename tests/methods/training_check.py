"""Shared check for every method: two short epochs on tiny data through the real trainer give a
finite, decreasing loss and embeddings that have not collapsed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from contrastlab.config import build_config
from contrastlab.eval.runs import load_run
from contrastlab.train import train

QUIET = Console(quiet=True)


def train_two_short_epochs(method: str, out: Path, **overrides: Any) -> dict[str, Any]:
    """Train ``method`` for 2 epochs of 8 steps on digits (batch 64, 8x8 images) and return the
    epoch losses and the std of L2-normalised projector embeddings of 256 test images."""
    values: dict[str, Any] = {
        "method": method, "data": "digits", "backbone": "convnet-small", "epochs": 2,
        "batch_size": 64, "out": str(out), "log_every": 1, "seed": 0, "knn_k": 20,
        "warmup_fraction": 0.0,
    }
    values.update(overrides)
    train(build_config(None, values), console=QUIET, evaluate_at_end=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch_losses = [r["loss"] for r in records if r["type"] == "epoch"]
    step_losses = [r["loss"] for r in records if r["type"] == "step"]
    loaded = load_run(out)
    from contrastlab.data import load_dataset

    splits = load_dataset("digits")
    assert splits.test is not None
    with torch.no_grad():
        z = loaded.method.project(loaded.transform(splits.test.images[:256]))
    z = F.normalize(z.float().flatten(1), dim=1)
    return {
        "epoch_losses": epoch_losses,
        "step_losses": step_losses,
        "normalized_std": float(z.std(dim=0).mean()),
        "dim": z.shape[1],
    }


def assert_trains_without_collapse(result: dict[str, Any]) -> None:
    """Finite losses, second epoch lower than the first, std of normalised embeddings above
    0.5 / sqrt(dim) (complete collapse gives 0; uniform spread gives 1 / sqrt(dim))."""
    losses = result["step_losses"]
    assert losses and all(math.isfinite(v) for v in losses), losses
    first, second = result["epoch_losses"]
    assert second < first, result["epoch_losses"]
    assert result["normalized_std"] > 0.5 / math.sqrt(result["dim"]), result
