"""Transfer evaluation: a run's frozen encoder on a second dataset.

(a) kNN and linear probe trained and tested on the second dataset D2 (its own train/test split),
    the usual "linear evaluation on other datasets" protocol (e.g. Chen et al. 2020, Sec. 6).
(b) With a probe dataset D1 that shares D2's label space (the same class names, or without names
    the same number of classes): kNN and linear probe fitted on D1's training features and tested
    on D2's test features, i.e. how well a classifier learnt on one domain carries over to another
    (e.g. digits -> MNIST) through the frozen encoder.

Images of another size than the encoder's are resized by the run's ``EvalTransform``; images with
another number of channels are refused with a DataError. Tar shards are streamed (one pass per
split, see :mod:`contrastlab.eval.runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.errors import DataError
from contrastlab.eval.protocols import PROTOCOLS, score_features
from contrastlab.eval.runs import (
    Images,
    check_features,
    frozen_features,
    load_eval_data,
    load_run,
    require_labels,
    require_test,
)


def _num_classes(dataset: Images) -> int:
    return dataset.num_classes or 0


def align_labels(probe: Images, target: Images, probe_spec: str,
                 target_spec: str) -> Tensor:
    """``probe``'s labels expressed as ``target``'s label indices.

    With class names on both sides the names must be the same set (labels are mapped by name,
    so the order may differ); otherwise both must have the same number of classes.

    Raises:
        DataError: when the label spaces differ (naming the classes that do not match).
    """
    labels = require_labels(probe)
    if probe.classes is not None and target.classes is not None:
        if probe.classes == target.classes:
            return labels
        only_probe = sorted(set(probe.classes) - set(target.classes))
        only_target = sorted(set(target.classes) - set(probe.classes))
        if only_probe or only_target or len(set(probe.classes)) != len(probe.classes):
            raise DataError(
                f"--probe-data '{probe_spec}' and --data '{target_spec}' have different classes "
                f"(only in the probe data: {only_probe[:10]}; only in --data: "
                f"{only_target[:10]}); the probe needs the same label space"
            )
        index = {name: i for i, name in enumerate(target.classes)}
        mapping = torch.tensor([index[name] for name in probe.classes], dtype=torch.int64)
        return mapping[labels]
    if _num_classes(probe) != _num_classes(target):
        raise DataError(
            f"--probe-data '{probe_spec}' has {_num_classes(probe)} classes but --data "
            f"'{target_spec}' has {_num_classes(target)}; the probe needs the same label space"
        )
    return labels


def transfer_run(
    run: str | Path,
    data: str,
    probe_data: str | None = None,
    protocols: tuple[str, ...] = PROTOCOLS,
    k: int = 200,
    temperature: float = 0.1,
    features: str = "backbone",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Transfer scores of a run's encoder on ``data`` (see the module docstring).

    Returns ``knn_top1`` / ``linear_top1`` / ``linear_C`` of (a) with ``n_train`` / ``n_test`` of
    D2, and with ``probe_data`` also ``cross_knn_top1`` / ``cross_linear_top1`` / ``cross_linear_C``
    and ``n_probe_train`` of (b).
    """
    check_features(features)
    loaded = load_run(run, device)
    seed = loaded.config.get("seed", 0)
    target = load_eval_data(loaded, data)
    probe = load_eval_data(loaded, probe_data) if probe_data is not None else None
    target_test = require_test(target)
    if probe is not None:  # refuse other label spaces before any feature is computed
        align_labels(probe.train, target_test, str(probe_data), data)
    test_features = frozen_features(loaded, target_test, features, device)
    train_features = frozen_features(loaded, target.train, features, device)
    test_labels = require_labels(target_test)
    result: dict[str, Any] = {"data": data}
    result.update(score_features(train_features, require_labels(target.train), test_features,
                                 test_labels, protocols, k, temperature, seed))
    result.update(n_train=len(target.train), n_test=len(target_test))
    if probe is not None:
        probe_features = frozen_features(loaded, probe.train, features, device)
        # after the pass: a streamed set knows then which samples it skipped
        probe_labels = align_labels(probe.train, target_test, str(probe_data), data)
        cross = score_features(probe_features, probe_labels, test_features, test_labels,
                               protocols, k, temperature, seed)
        result["probe_data"] = probe_data
        result.update({f"cross_{key}": value for key, value in cross.items() if key != "k"})
        result["n_probe_train"] = len(probe.train)
    if features != "backbone":
        result["features"] = features
    return result
