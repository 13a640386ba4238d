"""Evaluate a finished (or running) run directory: rebuild its encoder from the checkpoint and
score it on the same test split the run held out, or on another dataset.

Tar shards are streamed (unless the run was trained with ``--stream off``): the features are
computed in one pass over the shards, decoded in worker processes, without holding the images
(:mod:`contrastlab.data.streamed_images`); other data, and commands that need the images
themselves (fine-tuning), decode into memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.data import DatasetSplits, ImageDataset, load_dataset
from contrastlab.data.loader import shard_sets_of
from contrastlab.data.streamed_images import StreamedImages, StreamedSplits, open_streamed_splits
from contrastlab.errors import DataError
from contrastlab.eval.features import extract_features
from contrastlab.eval.protocols import score_features
from contrastlab.eval.subsets import check_label_fraction, label_fraction_subset
from contrastlab.runs.loading import FEATURES, LoadedRun, check_features, load_run

Splits = DatasetSplits | StreamedSplits
Images = ImageDataset | StreamedImages


def load_eval_data(
    loaded: LoadedRun,
    data: str | None = None,
    test_fraction: float | None = None,
    split_seed: int | None = None,
    stream: bool = True,
) -> Splits:
    """The labelled train/test splits to evaluate ``loaded`` on: ``data`` (default: the run's own
    data), split with the run's ``test_fraction`` / ``split_seed`` unless given.

    Tar shards are catalogued, not decoded (:class:`StreamedSplits`, the same split), unless
    ``stream`` is False or the run was trained with ``stream: off``. Images of another size are
    resized by the run's :class:`EvalTransform` when features are extracted; images with another
    number of channels are refused.

    Raises:
        DataError: for unlabelled data or a channel count the encoder was not trained on.
    """
    config = loaded.config
    spec = data or config["data"]
    fraction = config["test_fraction"] if test_fraction is None else test_fraction
    seed = config["split_seed"] if split_seed is None else split_seed
    shards = shard_sets_of(spec) if stream and config.get("stream", "auto") != "off" else None
    splits: Splits
    if shards is not None:
        splits = open_streamed_splits(
            *shards, test_fraction=fraction, split_seed=seed,
            image_size=config.get("image_size"),
            skip_bad_files=config.get("skip_bad_files", False),
            workers=config.get("loader_workers"))
    else:
        splits = load_dataset(spec, test_fraction=fraction, split_seed=seed,
                              skip_bad_files=config.get("skip_bad_files", False),
                              image_size=config.get("image_size"))
    if splits.test is None or splits.train.labels is None or splits.test.labels is None:
        raise DataError(f"'{spec}' has no labels: evaluation needs labelled data")
    if splits.train.channels != loaded.meta["in_channels"]:
        raise DataError(
            f"'{spec}' has {splits.train.channels}-channel images but the encoder was trained on "
            f"{loaded.meta['in_channels']}-channel images; convert the data to "
            f"{loaded.meta['in_channels']} channel(s)"
        )
    return splits


def frozen_features(loaded: LoadedRun, dataset: Images, features: str = "backbone",
                    device: torch.device | str = "cpu") -> Tensor:
    """float32 (N, D) features of ``dataset`` under the run's frozen encoder: images in memory
    through :meth:`LoadedRun.features`, streamed shards in one pass (:func:`extract_features`,
    batches of 1,024, as :meth:`LoadedRun.embed`). For streamed data, read the labels after
    this call: samples skipped under ``skip_bad_files`` are known only then."""
    if isinstance(dataset, ImageDataset):
        return loaded.features(dataset, features, device)
    loaded.method.to(device)
    return extract_features(loaded.encoder(features), dataset, loaded.transform, device)


def require_labels(dataset: Images) -> Tensor:
    """``dataset.labels``, or DataError when the dataset is unlabelled."""
    if dataset.labels is None:
        raise DataError(f"'{dataset.name}' has no labels: evaluation needs labelled data")
    return dataset.labels


def require_test(splits: Splits) -> Images:
    """``splits.test``, or DataError when there is no labelled test split."""
    if splits.test is None:
        raise DataError(f"'{splits.train.name}' has no test split: evaluation needs labelled data")
    return splits.test


def labelled_subset(train: Images, label_fraction: float, seed: int = 0) -> Images:
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
    splits: Splits,
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
    train_features = frozen_features(loaded, train, features, device)
    test_features = frozen_features(loaded, test, features, device)
    scores: dict[str, Any] = score_features(train_features, require_labels(train), test_features,
                                            require_labels(test), protocols, k, temperature,
                                            seed=loaded.config.get("seed", 0))
    scores.update(n_train=len(train), n_test=len(test))
    if label_fraction != 1.0:
        scores["label_fraction"] = float(label_fraction)
    if features != "backbone":
        scores["features"] = features
    return scores


__all__ = ["FEATURES", "LoadedRun", "check_features", "evaluate_run", "frozen_features",
           "labelled_subset", "load_eval_data", "load_run", "require_labels", "require_test",
           "score_loaded"]
