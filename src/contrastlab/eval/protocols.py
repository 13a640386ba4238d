"""Evaluation protocols on frozen features: extract once, then score kNN and/or a linear probe."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from contrastlab.data import ImageDataset
from contrastlab.eval.features import extract_features
from contrastlab.eval.knn import knn_accuracy
from contrastlab.eval.linear import linear_probe

PROTOCOLS = ("knn", "linear")


def score_features(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    protocols: Iterable[str] = PROTOCOLS,
    k: int = 200,
    temperature: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of each protocol on already-extracted features."""
    scores: dict[str, float] = {}
    for protocol in protocols:
        if protocol == "knn":
            scores["knn_top1"] = knn_accuracy(train_features, train_labels, test_features,
                                              test_labels, k=k, temperature=temperature)
            scores["k"] = k
        elif protocol == "linear":
            scores.update(linear_probe(train_features, train_labels, test_features, test_labels,
                                       seed=seed))
        else:
            raise ValueError(f"unknown protocol '{protocol}'; choose from {', '.join(PROTOCOLS)}")
    return scores


def evaluate_features(
    encode: Callable[[Tensor], Tensor],
    train: ImageDataset,
    test: ImageDataset,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    protocols: Iterable[str] = PROTOCOLS,
    k: int = 200,
    temperature: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Encode both splits with the frozen encoder and score each protocol on the test split."""
    if train.labels is None or test.labels is None:
        raise ValueError("kNN and linear evaluation need labelled training and test data")
    train_features = extract_features(encode, train, transform, device)
    test_features = extract_features(encode, test, transform, device)
    return score_features(train_features, train.labels, test_features, test.labels,
                          protocols, k, temperature, seed)
