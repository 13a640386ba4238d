"""Embedding diagnostics against direct, slow implementations of the papers' formulas."""

import math
import statistics

import numpy as np
import pytest
import torch

from contrastlab.data import load_dataset
from contrastlab.eval.diagnostics import (
    alignment,
    covariance_spectrum,
    diagnose_embeddings,
    diagnose_method,
    effective_rank,
    normalized_std,
    pair_cosines,
    top_eigenvalue_ratio,
    uniformity,
)
from contrastlab.methods import build_method
from contrastlab.views import AugmentedViews, channel_stats


def unit(row):
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def rows(z):
    return [[float(v) for v in r] for r in z.tolist()]


def sample(n=12, d=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return z1, z2


# ------------------------------------------------------------------ slow references
def slow_alignment(z1, z2, alpha):
    total = 0.0
    for a, b in zip(rows(z1), rows(z2), strict=True):
        a, b = unit(a), unit(b)
        total += math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True))) ** alpha
    return total / len(z1)


def slow_uniformity(z, t):
    points = [unit(r) for r in rows(z)]
    terms = []
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            squared = sum((x - y) ** 2 for x, y in zip(points[i], points[j], strict=True))
            terms.append(math.exp(-t * squared))
    return math.log(sum(terms) / len(terms))


def slow_effective_rank(z, eps=1e-7):
    # singular values as square roots of the eigenvalues of Z^T Z (numpy, independent of torch)
    matrix = np.array(rows(z))
    eigenvalues = np.linalg.eigvalsh(matrix.T @ matrix)
    sigma = [math.sqrt(max(v, 0.0)) for v in eigenvalues]
    total = sum(sigma)
    p = [s / total + eps for s in sigma]
    return math.exp(-sum(q * math.log(q) for q in p))


def slow_spectrum(z):
    points = [unit(r) for r in rows(z)]
    n, d = len(points), len(points[0])
    mean = [sum(p[k] for p in points) / n for k in range(d)]
    cov = [[0.0] * d for _ in range(d)]
    for p in points:
        for a in range(d):
            for b in range(d):
                cov[a][b] += (p[a] - mean[a]) * (p[b] - mean[b]) / n
    return sorted(np.linalg.eigvalsh(np.array(cov)).tolist(), reverse=True)


def slow_normalized_std(z):
    points = [unit(r) for r in rows(z)]
    d = len(points[0])
    return sum(statistics.pstdev([p[k] for p in points]) for k in range(d)) / d


def slow_pair_cosines(z1, z2):
    a, b = [unit(r) for r in rows(z1)], [unit(r) for r in rows(z2)]
    n = len(a)
    cos = [[sum(x * y for x, y in zip(a[i], b[j], strict=True)) for j in range(n)]
           for i in range(n)]
    positive = sum(cos[i][i] for i in range(n)) / n
    negative = sum(cos[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return positive, negative


# ------------------------------------------------------------------ against the references
@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_alignment_matches_direct_formula(alpha):
    z1, z2 = sample()
    assert alignment(z1, z2, alpha) == pytest.approx(slow_alignment(z1, z2, alpha), abs=1e-10)


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_uniformity_matches_direct_formula(t):
    z1, _ = sample(n=15, d=4, seed=1)
    assert uniformity(z1, t) == pytest.approx(slow_uniformity(z1, t), abs=1e-10)


def test_uniformity_is_stable_where_the_direct_formula_underflows():
    # three orthogonal unit vectors: every squared distance is 2, so L = log exp(-2t) = -2t;
    # exp(-2000) underflows in float64 but the logsumexp form is exact
    z = torch.eye(3, dtype=torch.float64) * 7.0
    assert uniformity(z, t=1000.0) == pytest.approx(-2000.0, abs=1e-9)
    assert uniformity(torch.ones(5, 3), t=2.0) == pytest.approx(0.0, abs=1e-12)  # all the same


def test_effective_rank_matches_direct_formula_and_known_values():
    z1, _ = sample(n=20, d=6, seed=2)
    assert effective_rank(z1) == pytest.approx(slow_effective_rank(z1), abs=1e-8)
    # r equal singular values -> rank r (up to the eps of the paper); rank-one -> 1
    for r in (1, 3, 5):
        z = torch.zeros(10, 8, dtype=torch.float64)
        z[:r, :r] = torch.eye(r) * 3.0
        assert effective_rank(z) == pytest.approx(r, rel=1e-4)


def test_covariance_spectrum_matches_direct_covariance():
    z1, _ = sample(n=9, d=5, seed=3)
    spectrum = covariance_spectrum(z1)
    assert spectrum.tolist() == pytest.approx(slow_spectrum(z1), abs=1e-12)
    assert torch.all(spectrum[:-1] >= spectrum[1:])
    # fewer samples than dimensions: D values, the missing ones zero
    assert covariance_spectrum(torch.randn(3, 6)).shape == (6,)


def test_top_eigenvalue_ratio_matches_direct_covariance():
    z1, _ = sample(n=40, d=9, seed=7)
    eigenvalues = slow_spectrum(z1)
    assert top_eigenvalue_ratio(z1) == pytest.approx(sum(eigenvalues[:5]) / sum(eigenvalues),
                                                     abs=1e-12)
    assert top_eigenvalue_ratio(z1, k=2) == pytest.approx(
        sum(eigenvalues[:2]) / sum(eigenvalues), abs=1e-12)


def test_top_eigenvalue_ratio_on_a_known_covariance():
    """Without normalisation, points +-s_d e_d (d = 1..D, two per axis) have covariance
    diag(s_d^2 / D): the ratio is the top five s_d^2 over their sum."""
    scales = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25], dtype=torch.float64)
    axes = torch.diag(scales)
    z = torch.cat([axes, -axes])
    squares = scales.pow(2)
    expected = float(squares[:5].sum() / squares.sum())
    assert top_eigenvalue_ratio(z, normalize=False) == pytest.approx(expected, abs=1e-12)
    assert top_eigenvalue_ratio(z, normalize=True) == pytest.approx(5 / 8, abs=1e-12)
    assert top_eigenvalue_ratio(z[:, :3], normalize=False) == pytest.approx(1.0)  # D <= 5
    flat = torch.randn(10, 3, generator=torch.Generator().manual_seed(0)) @ torch.randn(
        3, 16, generator=torch.Generator().manual_seed(1))
    assert top_eigenvalue_ratio(flat) == pytest.approx(1.0, abs=1e-9)  # rank 3: all in the top 5
    assert math.isnan(top_eigenvalue_ratio(torch.ones(6, 8)))  # no variance at all


def test_normalized_std_matches_direct_formula_and_reference_points():
    z1, _ = sample(n=11, d=7, seed=4)
    assert normalized_std(z1) == pytest.approx(slow_normalized_std(z1), abs=1e-12)
    spread = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert normalized_std(spread) == pytest.approx(1 / math.sqrt(64), rel=0.02)
    assert normalized_std(torch.ones(50, 64) * 3) == pytest.approx(0.0, abs=1e-12)


def test_pair_cosines_match_direct_formula():
    z1, z2 = sample(n=8, d=4, seed=5)
    positive, negative = pair_cosines(z1, z2)
    slow_positive, slow_negative = slow_pair_cosines(z1, z2)
    assert positive == pytest.approx(slow_positive, abs=1e-12)
    assert negative == pytest.approx(slow_negative, abs=1e-12)


# ------------------------------------------------------------------ the combined dict
def test_diagnose_embeddings_combines_the_measures():
    z1, z2 = sample(n=30, d=6, seed=6)
    values = diagnose_embeddings(z1.float(), z2.float(), spectrum_size=4)
    both = torch.cat([z1, z2])
    assert values["n"] == 30 and values["dim"] == 6
    assert values["alignment"] == pytest.approx(slow_alignment(z1, z2, 2.0), abs=1e-5)
    assert values["uniformity"] == pytest.approx(
        (slow_uniformity(z1, 2.0) + slow_uniformity(z2, 2.0)) / 2, abs=1e-5)
    assert values["effective_rank"] == pytest.approx(slow_effective_rank(both), abs=1e-4)
    assert values["effective_rank_ratio"] == pytest.approx(values["effective_rank"] / 6)
    assert values["normalized_std_ratio"] == pytest.approx(
        slow_normalized_std(both) * math.sqrt(6), abs=1e-5)
    assert len(values["spectrum"]) == 4
    assert values["spectrum"] == pytest.approx(slow_spectrum(both)[:4], rel=1e-3)
    eigenvalues = slow_spectrum(both)
    assert values["top5_eigenvalue_ratio"] == pytest.approx(
        sum(eigenvalues[:5]) / sum(eigenvalues), abs=1e-5)


def test_diagnose_embeddings_reports_collapse_and_divergence_without_nan():
    zeros = diagnose_embeddings(torch.zeros(10, 4), torch.zeros(10, 4))
    assert zeros["normalized_std"] == 0.0 and zeros["uniformity"] == 0.0
    same = diagnose_embeddings(torch.ones(10, 4), torch.ones(10, 4))
    assert same["negative_cosine"] == pytest.approx(1.0) and same["alignment"] == 0.0
    broken = torch.full((10, 4), float("nan"))
    values = diagnose_embeddings(broken, broken)
    assert values["alignment"] is None and values["normalized_std"] is None
    assert values["top5_eigenvalue_ratio"] is None and zeros["top5_eigenvalue_ratio"] is None
    with pytest.raises(ValueError, match="shape"):
        diagnose_embeddings(torch.zeros(10, 4), torch.zeros(9, 4))


# ------------------------------------------------------------------ on a method
def test_diagnose_method_leaves_training_state_untouched():
    torch.manual_seed(0)
    images = load_dataset("digits").train.images[:300]
    mean, std = channel_stats(images)
    views = AugmentedViews(8, 1, mean, std)
    method = build_method("simclr", "convnet-small", 1, projection_hidden_dim=32,
                          projection_dim=16)
    method.train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    first = diagnose_method(method, images, views, max_images=100, seed=1, batch_size=40)
    second = diagnose_method(method, images, views, max_images=100, seed=1, batch_size=40)
    assert method.training
    assert torch.equal(rng, torch.get_rng_state())
    for key, value in method.state_dict().items():  # batch-norm buffers included
        assert torch.equal(value, before[key]), key
    assert first == second  # same subset and views for a seed
    assert set(first) == {"projector", "backbone"}
    assert first["projector"]["dim"] == 16 and first["projector"]["n"] == 100
    assert first["backbone"]["dim"] == method.feature_dim
    assert 0.0 <= first["projector"]["alignment"] <= 4.0
