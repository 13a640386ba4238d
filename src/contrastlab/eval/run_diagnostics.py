"""Diagnostics of a run directory's model: ``contrastlab diagnose --run RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from contrastlab.data import load_dataset
from contrastlab.errors import DataError
from contrastlab.eval.collapse import CollapseMonitor
from contrastlab.eval.diagnostics import diagnose_method
from contrastlab.eval.runs import load_run
from contrastlab.views import AugmentedViews


def diagnose_run(run: str | Path, data: str | None = None, device: torch.device | str = "cpu",
                 max_images: int = 2000, seed: int | None = None) -> dict[str, Any]:
    """Diagnose the model in ``RUN/checkpoints/last.pt`` on two augmented views of up to
    ``max_images`` training images of ``data`` (default: the run's own data and split).

    The views use the run's augmentation settings and normalisation; ``seed`` (default: the
    run's seed, so the same subset and views as the diagnostics logged during training) picks
    the subset and views. Returns ``{"run", "data",
    "epoch", "projector": {...}, "backbone": {...}, "collapse": [findings]}`` where each
    finding is ``{"kind", "space", "evidence"}`` for this one evaluation.
    """
    from contrastlab.config import TrainConfig
    from contrastlab.runs import RunDirectory, build_views, load_checkpoint

    loaded = load_run(run, device)
    config, meta = loaded.config, loaded.meta
    spec = data or config["data"]
    splits = load_dataset(spec, test_fraction=config["test_fraction"],
                          split_seed=config["split_seed"],
                          skip_bad_files=config.get("skip_bad_files", False),
                          image_size=meta["image_size"])
    if splits.train.channels != meta["in_channels"]:
        raise DataError(
            f"'{spec}' has {splits.train.channels}-channel images but the model was trained on "
            f"{meta['in_channels']}-channel images; convert the data to {meta['in_channels']} "
            "channel(s)"
        )
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    training_views = build_views(TrainConfig.from_dict(config, "the run's configuration"),
                                 meta["image_size"], meta["in_channels"], mean, std)
    views = AugmentedViews(meta["image_size"], meta["in_channels"], mean, std,
                           training_views.config, view_configs=training_views.view_configs)
    diagnostics = diagnose_method(loaded.method, splits.train.images, views, device,
                                  max_images=max_images,
                                  seed=config.get("seed", 0) if seed is None else seed)
    findings = CollapseMonitor(method=meta["method"]).check(diagnostics)
    epoch = load_checkpoint(RunDirectory(run).checkpoint_path).get("epoch")
    return {"run": str(run), "data": spec, "epoch": epoch, **diagnostics,
            "collapse": [{"kind": f.kind, "space": f.space, "evidence": f.evidence}
                         for f in findings]}
