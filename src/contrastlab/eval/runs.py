"""Evaluate a finished (or running) run directory: rebuild its encoder from the checkpoint and
score it on the same test split the run held out, or on another dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contrastlab.data import load_dataset
from contrastlab.errors import CheckpointError, DataError
from contrastlab.eval.protocols import evaluate_features
from contrastlab.methods import Method, build_method
from contrastlab.train.checkpoint import load_checkpoint
from contrastlab.train.run_dir import RunDirectory
from contrastlab.views import EvalTransform


@dataclass
class LoadedRun:
    """A method rebuilt from a run's checkpoint, in eval mode, with its metadata."""

    method: Method
    meta: dict[str, Any]
    config: dict[str, Any]

    @property
    def transform(self) -> EvalTransform:
        m = self.meta
        return EvalTransform(m["image_size"], m["in_channels"], tuple(m["mean"]), tuple(m["std"]))


def load_run(run: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Load ``RUN/checkpoints/last.pt`` (safely, weights only) and rebuild the method."""
    run_dir = RunDirectory(run)
    if not run_dir.root.is_dir():
        raise CheckpointError(f"run directory '{run_dir.root}' does not exist")
    state = load_checkpoint(run_dir.checkpoint_path)
    if "model_meta" not in state or "model" not in state:
        raise CheckpointError(f"'{run_dir.checkpoint_path}' is not a contrastlab checkpoint")
    meta = state["model_meta"]
    method = build_method(meta["method"], meta["backbone"], meta["in_channels"],
                          **meta["method_kwargs"])
    method.load_state_dict(state["model"])
    method.to(device).eval()
    return LoadedRun(method, meta, state["config"])


def evaluate_run(
    run: str | Path,
    protocols: tuple[str, ...] = ("knn",),
    data: str | None = None,
    k: int = 200,
    temperature: float = 0.1,
    test_fraction: float | None = None,
    split_seed: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Score a run's encoder. With ``data=None`` the run's own data and held-out split are used."""
    loaded = load_run(run, device)
    config = loaded.config
    spec = data or config["data"]
    splits = load_dataset(
        spec,
        test_fraction=config["test_fraction"] if test_fraction is None else test_fraction,
        split_seed=config["split_seed"] if split_seed is None else split_seed,
        skip_bad_files=config.get("skip_bad_files", False),
        image_size=config.get("image_size"),
    )
    if splits.test is None or splits.train.labels is None:
        raise DataError(f"'{spec}' has no labels: kNN and linear evaluation need labelled data")
    if splits.train.channels != loaded.meta["in_channels"]:
        raise DataError(
            f"'{spec}' has {splits.train.channels}-channel images but the encoder was trained on "
            f"{loaded.meta['in_channels']}-channel images"
        )
    with torch.no_grad():
        scores = evaluate_features(loaded.method.encode, splits.train, splits.test,
                                   loaded.transform, device, protocols, k, temperature,
                                   seed=config.get("seed", 0))
    return {**scores, "n_train": len(splits.train), "n_test": len(splits.test)}
