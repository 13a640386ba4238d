r"""Few-shot evaluation of frozen features: N-way K-shot episodes, nearest-prototype classifier.

The standard episodic protocol (Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS
2016; Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017; with cosine
prototypes as in Chen et al., "A Closer Look at Few-shot Classification", ICLR 2019): an episode
draws N classes, then K support and Q query images of each class, without replacement, from the
test split. Each class's prototype is the mean of its L2-normalised support features,

.. math::  p_c = \frac{1}{K} \sum_{i \in S_c} \frac{f_i}{\lVert f_i \rVert}, \qquad
           \hat y(q) = \arg\max_c \frac{f_q^\top p_c}{\lVert f_q \rVert \, \lVert p_c \rVert},

and a query is given the class of its most cosine-similar prototype. The accuracy is averaged over
E episodes and reported with the 95% confidence interval of that mean,
:math:`1.96\,\sigma / \sqrt{E}`, where :math:`\sigma` is the standard deviation of the per-episode
accuracies (population form, ``ddof=0``, as the usual few-shot evaluation code computes it).
Episodes come from a ``torch.Generator`` seeded with ``seed``, one stream per K, so a result does
not depend on which other K were asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.threads import single_thread_if_small


@dataclass
class FewShotResult:
    """Mean accuracy over the episodes of one (ways, shots) setting and its 95% interval."""

    ways: int
    shots: int
    queries: int
    episodes: int
    mean: float
    ci95: float


def prototype_predict(
    support: Tensor, support_labels: Tensor, query: Tensor, num_classes: int
) -> Tensor:
    """Nearest cosine prototype of each query row (int64 labels in ``0..num_classes-1``).

    ``support_labels`` must hold every class in ``0..num_classes-1`` at least once.
    """
    normalised = F.normalize(support.float(), dim=1)
    sums = torch.zeros(num_classes, normalised.shape[1], dtype=normalised.dtype,
                       device=normalised.device)
    sums.index_add_(0, support_labels, normalised)
    counts = torch.bincount(support_labels, minlength=num_classes).clamp(min=1)
    prototypes = F.normalize(sums / counts.unsqueeze(1).to(sums.dtype), dim=1)
    return (F.normalize(query.float(), dim=1) @ prototypes.t()).argmax(dim=1)


def confidence_interval_95(accuracies: Tensor) -> float:
    """Half-width of the 95% normal interval of the mean: ``1.96 * std / sqrt(E)`` (ddof=0)."""
    values = accuracies.double()
    return float(1.96 * values.std(unbiased=False) / math.sqrt(values.numel()))


def check_fewshot_args(ways: int, shots: Sequence[int], episodes: int, queries: int) -> None:
    """Raise ConfigError for a non-positive setting (naming the flag)."""
    for flag, value in (("--episodes", episodes), ("--queries", queries)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if ways < 2:
        raise ConfigError(f"--ways must be >= 2 (a 1-way episode cannot be wrong), got {ways}")
    if not shots or any(k < 1 for k in shots):
        raise ConfigError(f"--shots must be a comma-separated list of integers >= 1, got {shots}")


def sample_episode(
    members: list[Tensor], ways: int, shots: int, queries: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One episode: ``(support_idx, support_y, query_idx, query_y)`` with episode labels 0..N-1.

    ``members[c]`` holds the dataset indices of eligible class c (each with >= shots + queries).
    """
    classes = torch.randperm(len(members), generator=generator)[:ways]
    support, support_y, query, query_y = [], [], [], []
    for episode_label, c in enumerate(classes.tolist()):
        pool = members[c]
        picked = pool[torch.randperm(len(pool), generator=generator)[: shots + queries]]
        support.append(picked[:shots])
        query.append(picked[shots:])
        support_y.append(torch.full((shots,), episode_label, dtype=torch.int64))
        query_y.append(torch.full((queries,), episode_label, dtype=torch.int64))
    return torch.cat(support), torch.cat(support_y), torch.cat(query), torch.cat(query_y)


def fewshot_evaluate(
    features: Tensor,
    labels: Tensor,
    ways: int = 5,
    shots: Sequence[int] = (1, 5),
    episodes: int = 600,
    queries: int = 15,
    seed: int = 0,
) -> list[FewShotResult]:
    """N-way K-shot nearest-prototype accuracy for each K in ``shots`` (see module docstring).

    Raises:
        ConfigError: for non-positive settings.
        DataError: when fewer than ``ways`` classes have ``K + queries`` images.
    """
    check_fewshot_args(ways, shots, episodes, queries)
    with single_thread_if_small(0, features.device):  # hundreds of tiny episodes
        return _fewshot_evaluate(features, labels, ways, shots, episodes, queries, seed)


def _fewshot_evaluate(features: Tensor, labels: Tensor, ways: int, shots: Sequence[int],
                      episodes: int, queries: int, seed: int) -> list[FewShotResult]:
    labels = labels.cpu().long()
    features = features.float()
    all_members = [(labels == c).nonzero().flatten() for c in range(int(labels.max()) + 1)]
    results = []
    for k in shots:
        members = [m for m in all_members if len(m) >= k + queries]
        if len(members) < ways:
            raise DataError(
                f"{ways}-way {k}-shot episodes with {queries} queries need {ways} classes with at "
                f"least {k + queries} test images each; only {len(members)} classes have that "
                f"many. Lower --ways, --shots or --queries"
            )
        generator = torch.Generator().manual_seed(seed)
        accuracies = torch.empty(episodes, dtype=torch.float64)
        for e in range(episodes):
            s_idx, s_y, q_idx, q_y = sample_episode(members, ways, k, queries, generator)
            predicted = prototype_predict(features[s_idx.to(features.device)],
                                          s_y.to(features.device),
                                          features[q_idx.to(features.device)], ways)
            accuracies[e] = (predicted.cpu() == q_y).double().mean()
        results.append(FewShotResult(ways, k, queries, episodes, float(accuracies.mean()),
                                     confidence_interval_95(accuracies)))
    return results


def fewshot_run(
    run: str | Path,
    ways: int = 5,
    shots: Sequence[int] = (1, 5),
    episodes: int = 600,
    queries: int = 15,
    features: str = "backbone",
    seed: int = 0,
    device: torch.device | str = "cpu",
    data: str | None = None,
) -> dict[str, Any]:
    """Few-shot scores of a run's frozen encoder on its held-out test split (or on the test
    split of ``data``).

    Returns ``fewshot_{N}way_{K}shot_top1`` and ``fewshot_{N}way_{K}shot_ci95`` for each K, with
    the settings and ``n_test``.
    """
    from contrastlab.eval.runs import (
        check_features,
        frozen_features,
        load_eval_data,
        load_run,
        require_labels,
        require_test,
    )

    check_fewshot_args(ways, shots, episodes, queries)
    check_features(features)
    loaded = load_run(run, device)
    test = require_test(load_eval_data(loaded, data))
    test_features = frozen_features(loaded, test, features, device)
    results = fewshot_evaluate(test_features, require_labels(test), ways, shots, episodes,
                               queries, seed)
    scores: dict[str, Any] = {}
    for r in results:
        scores[f"fewshot_{r.ways}way_{r.shots}shot_top1"] = r.mean
        scores[f"fewshot_{r.ways}way_{r.shots}shot_ci95"] = r.ci95
    scores.update(ways=ways, shots=list(shots), episodes=episodes, queries=queries,
                  n_test=len(test))
    if features != "backbone":
        scores["features"] = features
    return scores
