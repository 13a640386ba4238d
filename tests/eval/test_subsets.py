"""Stratified, seeded label-fraction subsets (SimCLR's 1% / 10% semi-supervised protocol)."""

import math

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.eval.subsets import check_label_fraction, class_quotas, label_fraction_subset


def quotas_direct(counts: list[int], fraction: float) -> list[int]:
    """Largest-remainder apportionment written out: floor (at least 1), then +1 for the largest
    remainders until the total reaches max(round(fN), number of classes)."""
    quotas = [min(n, max(1, math.floor(n * fraction))) if n else 0 for n in counts]
    target = max(round(fraction * sum(counts)), sum(1 for n in counts if n))
    candidates = [(-(n * fraction - math.floor(n * fraction)), c) for c, n in enumerate(counts)
                  if n and quotas[c] < n]
    for _, c in sorted(candidates)[: max(0, target - sum(quotas))]:
        quotas[c] += 1
    return quotas


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("counts", [[800, 790, 812, 805, 799], [3, 50, 1, 200, 17], [7, 0, 5]])
def test_quotas_match_direct_apportionment(counts: list[int], fraction: float) -> None:
    ours = class_quotas(torch.tensor(counts), fraction).tolist()
    assert ours == quotas_direct(counts, fraction)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 1.0])
def test_subset_is_stratified_and_covers_every_class(fraction: float) -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (8000,), generator=generator)
    labels[:3] = 10  # a class of three images still gets one
    index = label_fraction_subset(labels, fraction, seed=0)
    assert index.dtype == torch.int64 and torch.equal(index, index.sort().values)
    assert len(set(index.tolist())) == len(index)
    counts = torch.bincount(labels)
    chosen = torch.bincount(labels[index], minlength=len(counts))
    assert (chosen >= 1).all()
    assert len(index) == max(round(fraction * len(labels)), len(counts))
    assert ((chosen.double() - fraction * counts.double()).abs() <= 1.0).all()


def test_one_percent_of_mnist_sized_split_is_80_images() -> None:
    labels = torch.arange(10).repeat_interleave(800)
    index = label_fraction_subset(labels, 0.01, seed=0)
    assert len(index) == 80 and torch.bincount(labels[index]).tolist() == [8] * 10


def test_seeded_and_seed_dependent() -> None:
    labels = torch.arange(5).repeat(200)
    a = label_fraction_subset(labels, 0.1, seed=3)
    assert torch.equal(a, label_fraction_subset(labels, 0.1, seed=3))
    assert not torch.equal(a, label_fraction_subset(labels, 0.1, seed=4))
    assert torch.equal(label_fraction_subset(labels, 1.0, seed=4), torch.arange(1000))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_fraction_names_flag_and_range(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"--label-fraction must be in \(0, 1\]"):
        check_label_fraction(bad)
    with pytest.raises(ConfigError, match="--label-fraction"):
        label_fraction_subset(torch.arange(10) % 2, bad)  # type: ignore[arg-type]
