"""Spread check for methods without a projector (RotNet, MAE), on centred backbone features.

``training_check.assert_trains_without_collapse`` measures the std of L2-normalised ``project()``
embeddings, which assumes zero-centred embeddings (true of batch-normalised projector outputs).
Backbone features after a final ReLU or a ViT's final LayerNorm share a large common component,
so that measure is small even for informative features; subtracting the mean over the images
first keeps the check meaningful: complete collapse gives 0, collapse to one direction about
1 / dim, an even spread about 1 / sqrt(dim).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from contrastlab.data import load_dataset
from contrastlab.eval.runs import load_run


def assert_losses_finite_and_decreasing(result: dict[str, Any]) -> None:
    losses = result["step_losses"]
    assert losses and all(math.isfinite(v) for v in losses), losses
    first, second = result["epoch_losses"]
    assert second < first, result["epoch_losses"]


def assert_centred_features_spread(run_dir: Path) -> None:
    """Std of L2-normalised, centred backbone features of 256 digits > 0.5 / sqrt(dim)."""
    loaded = load_run(run_dir)
    test = load_dataset("digits").test
    assert test is not None
    with torch.no_grad():
        features = loaded.method.encode(loaded.transform(test.images[:256])).float()
    z = F.normalize(features - features.mean(dim=0), dim=1)
    spread = float(z.std(dim=0).mean())
    assert spread > 0.5 / math.sqrt(z.shape[1]), (spread, z.shape[1])
