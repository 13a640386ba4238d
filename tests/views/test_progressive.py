"""Progressive resizing: the views grow from min_view_size to the image size over the ramp, the
trainer uses the size of each step's progress, and resume stays exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import contrastlab
from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.runs import build_views, load_checkpoint
from contrastlab.views import AugmentedViews
from contrastlab.views.progressive import ProgressiveViews

QUIET = Console(quiet=True)


def views_of(size: int) -> AugmentedViews:
    return AugmentedViews(size, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_size_follows_the_ramp_in_steps_of_four() -> None:
    views = ProgressiveViews(views_of, 32, 16, (0.2, 0.6))
    sizes = [views.size_at(p / 100) for p in range(0, 101, 5)]
    assert sizes[:5] == [16] * 5  # up to the start of the ramp
    assert sizes[-8:] == [32] * 8  # from the end of the ramp
    assert sizes == sorted(sizes) and all(s % 4 == 0 for s in sizes)
    assert views.size_at(0.4) == 24  # half-way: 16 + 8
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = views.at(0.0)(images, torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in out] == [16, 16]
    assert views.at(0.0) is views.at(0.1)  # built once per size
    assert views(images)[0].shape[-1] == 32


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="min_view_size must be >= 4"):
        build_config(None, {"min_view_size": 2})
    with pytest.raises(ConfigError, match="view_size_ramp must be two numbers"):
        build_config(None, {"min_view_size": 8, "view_size_ramp": "0.8,0.2"})
    with pytest.raises(ConfigError, match="global views only.*--num-local-crops 0"):
        build_config(None, {"method": "swav", "min_view_size": 8})
    with pytest.raises(ConfigError, match="larger than image_size 16"):
        build_config(None, {"min_view_size": 24, "image_size": 16})
    config = build_config(None, {"min_view_size": 12})
    with pytest.raises(ConfigError, match="must be in 4..8"):
        build_views(config, 8, 1, (0.5,), (0.25,)).at(0.0)


SETTINGS = {"data": "digits", "backbone": "convnet-small", "epochs": 4, "batch_size": 128,
            "projection_hidden_dim": 32, "diagnose_every": 0, "log_every": 1,
            "min_view_size": 4, "view_size_ramp": (0.25, 0.75)}


def test_training_logs_growing_view_sizes_and_resumes_exactly(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    contrastlab.train(**SETTINGS, out=str(straight), console=QUIET, evaluate_at_end=False)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    sizes = [r["view_size"] for r in records if r["type"] == "step"]
    assert sizes[0] == 4 and sizes[-1] == 8 and sizes == sorted(sizes)
    stopped = tmp_path / "stopped"
    contrastlab.train(**SETTINGS, out=str(stopped), console=QUIET, evaluate_at_end=False,
                      stop_after_step=len(sizes) // 2 + 1)
    contrastlab.train(resume=True, out=str(stopped), console=QUIET, evaluate_at_end=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
