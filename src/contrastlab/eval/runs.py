"""Evaluate a finished (or running) run directory: rebuild its encoder from the checkpoint and
score it on the same test split the run held out, or on another dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.data import DatasetSplits, ImageDataset, load_dataset
from contrastlab.errors import DataError
from contrastlab.eval.protocols import score_features
from contrastlab.eval.subsets import check_label_fraction, label_fraction_subset
from contrastlab.runs.loading import FEATURES, LoadedRun, check_features, load_run


def load_eval_data(
    loaded: LoadedRun,
    data: str | None = None,
    test_fraction: float | None = None,
    split_seed: int | None = None,
) -> DatasetSplits:
    """The labelled train/test splits to evaluate ``loaded`` on: ``data`` (default: the run's own
    data), split with the run's ``test_fraction`` / ``split_seed`` unless given.

    Images of another size are resized by the run's :class:`EvalTransform` when features are
    extracted; images with another number of channels are refused.

    Raises:
        DataError: for unlabelled data or a channel count the encoder was not trained on.
    """
    config = loaded.config
    spec = data or config["data"]
    splits = load_dataset(
        spec,
        test_fraction=config["test_fraction"] if test_fraction is None else test_fraction,
        split_seed=config["split_seed"] if split_seed is None else split_seed,
        skip_bad_files=config.get("skip_bad_files", False),
        image_size=config.get("image_size"),
    )
    if splits.test is None or splits.train.labels is None or splits.test.labels is None:
        raise DataError(f"'{spec}' has no labels: evaluation needs labelled data")
    if splits.train.channels != loaded.meta["in_channels"]:
        raise DataError(
            f"'{spec}' has {splits.train.channels}-channel images but the encoder was trained on "
            f"{loaded.meta['in_channels']}-channel images; convert the data to "
            f"{loaded.meta['in_channels']} channel(s)"
        )
    return splits


def require_labels(dataset: ImageDataset) -> Tensor:
    """``dataset.labels``, or DataError when the dataset is unlabelled."""
    if dataset.labels is None:
        raise DataError(f"'{dataset.name}' has no labels: evaluation needs labelled data")
    return dataset.labels


def require_test(splits: DatasetSplits) -> ImageDataset:
    """``splits.test``, or DataError when there is no labelled test split."""
    if splits.test is None:
        raise DataError(f"'{splits.train.name}' has no test split: evaluation needs labelled data")
    return splits.test


def labelled_subset(train: ImageDataset, label_fraction: float, seed: int = 0) -> ImageDataset:
    """``train`` itself for a fraction of 1, else its stratified, seeded ``label_fraction``."""
    fraction = check_label_fraction(label_fraction)
    if fraction == 1.0 or train.labels is None:
        return train
    return train.subset(label_fraction_subset(train.labels, fraction, seed))


def evaluate_run(
    run: str | Path,
    protocols: tuple[str, ...] = ("knn",),
    data: str | None = None,
    k: int = 200,
    temperature: float = 0.1,
    test_fraction: float | None = None,
    split_seed: int | None = None,
    device: torch.device | str = "cpu",
    label_fraction: float = 1.0,
    features: str = "backbone",
    subset_seed: int = 0,
) -> dict[str, Any]:
    """Score a run's encoder. With ``data=None`` the run's own data and held-out split are used.

    ``label_fraction`` < 1 trains kNN / the linear probe on a stratified subset of the training
    labels (drawn with ``subset_seed``); ``features`` picks backbone or projector embeddings. The
    result holds ``label_fraction`` / ``features`` only when they differ from the defaults.
    """
    check_label_fraction(label_fraction)
    check_features(features)
    loaded = load_run(run, device)
    splits = load_eval_data(loaded, data, test_fraction, split_seed)
    return score_loaded(loaded, splits, protocols, k, temperature, device, label_fraction,
                        features, subset_seed)


def score_loaded(
    loaded: LoadedRun,
    splits: DatasetSplits,
    protocols: tuple[str, ...] = ("knn",),
    k: int = 200,
    temperature: float = 0.1,
    device: torch.device | str = "cpu",
    label_fraction: float = 1.0,
    features: str = "backbone",
    subset_seed: int = 0,
) -> dict[str, Any]:
    """The protocols' scores of a loaded encoder on ``splits`` (see :func:`evaluate_run`). The
    end of training scores through this function too, so ``contrastlab eval`` on a finished run
    gives the very figures training printed."""
    train = labelled_subset(splits.train, label_fraction, subset_seed)
    test = require_test(splits)
    train_features = loaded.features(train, features, device)
    test_features = loaded.features(test, features, device)
    scores: dict[str, Any] = score_features(train_features, require_labels(train), test_features,
                                            require_labels(test), protocols, k, temperature,
                                            seed=loaded.config.get("seed", 0))
    scores.update(n_train=len(train), n_test=len(test))
    if label_fraction != 1.0:
        scores["label_fraction"] = float(label_fraction)
    if features != "backbone":
        scores["features"] = features
    return scores


__all__ = ["FEATURES", "LoadedRun", "check_features", "evaluate_run", "labelled_subset",
           "load_eval_data", "load_run", "require_labels", "require_test", "score_loaded"]
