r"""Semantic textual similarity (STS): how well the cosine similarity of sentence embeddings
orders sentence pairs as people scored them.

The standard protocol (SentEval, Conneau & Kiela 2018; SimCSE, Gao et al. 2021, "all" setting
for STS-B): embed both sentences of every scored pair with the frozen encoder, take the cosine
similarity :math:`c_i = \cos(u_i, v_i)`, and report Spearman's rank correlation between the
:math:`c_i` and the gold scores :math:`g_i`, times 100:

.. math::

    \rho = \frac{\sum_i (r_i - \bar r)(q_i - \bar q)}
                {\sqrt{\sum_i (r_i - \bar r)^2 \sum_i (q_i - \bar q)^2}}

where :math:`r_i`, :math:`q_i` are the ranks of :math:`c_i` and :math:`g_i` (tied values share
their mean rank), i.e. Pearson's correlation of the ranks. Pearson's correlation of the raw
values is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.data.text import SentencePairs, read_pairs
from contrastlab.errors import DataError
from contrastlab.runs.text_run import load_text_run


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; NaN when either is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (the module docstring's rho)."""
    return pearson(average_ranks(x), average_ranks(y))


def sts_scores(embed: Callable[[Sequence[str]], Tensor], pairs: SentencePairs
               ) -> dict[str, Any]:
    """``spearman`` and ``pearson`` (x 100) of the cosine similarities of ``pairs`` (which must
    have scores) against their scores, and the number of ``pairs``."""
    if pairs.scores is None:
        raise DataError("STS evaluation needs a score on every pair (a score column, or the STS "
                        "Benchmark's layout)")
    if len(pairs) < 2:
        raise DataError(f"STS evaluation needs at least 2 scored pairs, got {len(pairs)}")
    first, second = embed(pairs.first), embed(pairs.second)
    cosine = F.cosine_similarity(first.double(), second.double(), dim=1).numpy()
    gold = np.asarray(pairs.scores, dtype=np.float64)
    return {"spearman": 100 * spearman(cosine, gold), "pearson": 100 * pearson(cosine, gold),
            "pairs": len(pairs)}


def evaluate_sts_run(run: str | Path, data: str | Path, device: torch.device | str = "cpu",
                     skip_bad_rows: bool = False) -> dict[str, Any]:
    """STS scores of the text run ``run`` on the scored pairs of ``data``."""
    pairs = read_pairs(data, skip_bad_rows)
    loaded = load_text_run(run, device)
    scores = sts_scores(loaded.embed, pairs)
    if pairs.skipped:
        scores["skipped_rows"] = len(pairs.skipped)
    return scores


__all__ = ["average_ranks", "evaluate_sts_run", "pearson", "spearman", "sts_scores"]
