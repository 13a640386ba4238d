r"""Labelled subsets of a training set for semi-supervised evaluation.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
ICML 2020, Sec. 4.2 / Table 7, evaluate with 1% and 10% of the ImageNet training labels, drawn
class-balanced. :func:`label_fraction_subset` draws such a subset from any labelled training set:
stratified by class, seeded, and with at least one image of every class.

With :math:`N` labelled images, :math:`n_c` of class :math:`c` and fraction :math:`f`, the subset
holds :math:`T = \max(\mathrm{round}(fN), \#\text{classes})` images. Class :math:`c` gets
:math:`\max(1, \lfloor f n_c \rfloor)` images, and the images still missing to reach :math:`T` go,
one each, to the classes with the largest remainders :math:`f n_c - \lfloor f n_c \rfloor`
(largest-remainder apportionment; ties to the smaller label). Which images of a class are taken is
a seeded random permutation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastlab.errors import ConfigError


def check_label_fraction(fraction: object) -> float:
    """Return ``fraction`` as a float, or raise ConfigError unless it lies in (0, 1]."""
    valid = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not valid or not math.isfinite(float(fraction)) or not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(
            f"--label-fraction must be in (0, 1] (e.g. 0.01, 0.1 or 1.0), got {fraction!r}"
        )
    return float(fraction)


def class_quotas(counts: Tensor, fraction: float) -> Tensor:
    """Images to take from each class (int64, one per entry of ``counts``; 0 for empty classes)."""
    counts = counts.to(torch.int64)
    present = counts > 0
    exact = counts.double() * fraction
    quotas = torch.where(present, exact.floor().long().clamp(min=1), torch.zeros_like(counts))
    quotas = torch.minimum(quotas, counts)
    target = max(round(fraction * int(counts.sum())), int(present.sum()))
    missing = target - int(quotas.sum())
    if missing > 0:
        remainder = exact - exact.floor()
        remainder[(quotas >= counts) | ~present] = -1.0
        order = sorted(range(len(counts)), key=lambda c: (-float(remainder[c]), c))
        for c in order[:missing]:
            if remainder[c] >= 0:
                quotas[c] += 1
    return quotas


def label_fraction_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Sorted int64 indices of a stratified, seeded ``fraction`` of ``labels`` (see module doc).

    Args:
        labels: int64 class labels (N,), values >= 0.
        fraction: share of the labels to keep, in (0, 1]; 1 keeps every index.
        seed: seed of the choice of images within each class.

    Raises:
        ConfigError: for a fraction outside (0, 1].
    """
    fraction = check_label_fraction(fraction)
    labels = labels.cpu().long()
    if fraction == 1.0 or labels.numel() == 0:
        return torch.arange(labels.numel(), dtype=torch.int64)
    counts = torch.bincount(labels)
    quotas = class_quotas(counts, fraction)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(counts)):
        members = (labels == c).nonzero().flatten()
        if len(members) == 0:
            continue
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[: int(quotas[c])]])
    return torch.cat(chosen).sort().values
