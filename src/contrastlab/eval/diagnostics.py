"""Diagnostics of learned embeddings: alignment, uniformity, effective rank, spectrum, collapse.

Pure functions of embedding matrices (rows = samples), computed in float64 on the inputs' device
without gradients, plus :func:`diagnose_method`, which embeds two augmented views of a subset of
images with a :class:`~contrastlab.methods.Method` (projector and backbone) and diagnoses both.

* :func:`alignment`, :func:`uniformity`: Wang & Isola, "Understanding Contrastive Representation
  Learning through Alignment and Uniformity on the Hypersphere", ICML 2020.
* :func:`effective_rank` (RankMe): Garrido, Balestriero, Najman & LeCun, "RankMe: Assessing the
  Downstream Performance of Pretrained Self-Supervised Representations by Their Rank", ICML 2023.
* :func:`covariance_spectrum`: the eigenvalues plotted by Jing, Vincent, LeCun & Tian,
  "Understanding Dimensional Collapse in Contrastive Self-supervised Learning", ICLR 2022;
  :func:`top_eigenvalue_ratio`: the share of their sum in the largest few.
* :func:`normalized_std`: the collapse indicator of Chen & He, "Exploring Simple Siamese
  Representation Learning", CVPR 2021, section 4.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

SPECTRUM_SIZE = 256
NORMALIZE_EPS = 1e-12


def _check_matrix(z: Tensor, name: str, min_rows: int = 1) -> Tensor:
    if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[0] < min_rows or z.shape[1] < 1:
        raise ValueError(
            f"{name}: expected embeddings of shape (N, D) with N >= {min_rows}, got "
            f"{tuple(getattr(z, 'shape', ()))}"
        )
    return z.detach().to(torch.float64)


def _check_pair(z1: Tensor, z2: Tensor, name: str, min_rows: int = 1) -> tuple[Tensor, Tensor]:
    a, b = _check_matrix(z1, name, min_rows), _check_matrix(z2, name, min_rows)
    if a.shape != b.shape:
        raise ValueError(f"{name}: the two views differ in shape: {tuple(a.shape)} vs "
                         f"{tuple(b.shape)}")
    return a, b.to(a.device)


def l2_normalize(z: Tensor) -> Tensor:
    """``z_i / max(||z_i||_2, 1e-12)`` row by row, in float64 (an all-zero row stays zero)."""
    return F.normalize(z.detach().to(torch.float64), dim=1, eps=NORMALIZE_EPS)


@torch.no_grad()
def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs (Wang & Isola 2020, eq. 4), lower is better, in [0, 2^alpha].

        L_align = E_{(x, y) ~ p_pos} || f(x) - f(y) ||_2^alpha,   f(x) = z / ||z||_2

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are the two views of one image; alpha = 2 as in
    the paper's experiments.
    """
    a, b = _check_pair(z1, z2, "alignment")
    if alpha <= 0:
        raise ValueError(f"alignment: alpha must be > 0, got {alpha}")
    distance = (l2_normalize(a) - l2_normalize(b)).norm(dim=1)
    return float(distance.pow(alpha).mean())


@torch.no_grad()
def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Uniformity on the hypersphere (Wang & Isola 2020, eq. 5), lower is better, in [-4t, 0].

        L_uniform = log E_{x, y ~ p_data, x != y} exp(-t || f(x) - f(y) ||_2^2)

    over all N(N-1)/2 distinct pairs of rows (``torch.pdist``), with t = 2 as in the paper;
    evaluated as ``logsumexp(-t d^2) - log(#pairs)`` so it does not underflow when the points are
    spread out. 0 means every point is the same.
    """
    x = l2_normalize(_check_matrix(z, "uniformity", min_rows=2))
    if t <= 0:
        raise ValueError(f"uniformity: t must be > 0, got {t}")
    squared = torch.pdist(x, p=2).pow(2)
    return float(torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel()))


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank (Garrido et al. 2023, eq. 1), in [1, min(N, D)].

        p_k = sigma_k / ||sigma||_1 + eps,   RankMe(Z) = exp(-sum_k p_k log p_k)

    with ``sigma`` the singular values of the (N, D) embedding matrix as given (not centred,
    not normalised), eps = 1e-7 as in the paper. It equals r when Z has r equal non-zero
    singular values, and drops towards 1 as the embeddings collapse onto one direction. NaN when
    Z is not finite.
    """
    x = _check_matrix(z, "effective_rank")
    if not bool(torch.isfinite(x).all()):
        return math.nan  # a diverged model: no spectrum to speak of
    sigma = torch.linalg.svdvals(x)
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def covariance_spectrum(z: Tensor, normalize: bool = True) -> Tensor:
    """Eigenvalues of the embedding covariance, sorted from largest to smallest (Jing et al. 2022).

        C = 1/N sum_i (f(x_i) - mean)(f(x_i) - mean)^T,   eigenvalues lambda_1 >= ... >= lambda_D

    with ``f(x) = z / ||z||_2`` when ``normalize`` (the default, so that spectra of different
    epochs and models are on one scale: ``sum_k lambda_k = 1 - ||mean||^2 <= 1``). A long tail of
    near-zero eigenvalues is dimensional collapse. Returns D float64 values on the input's
    device (NaN when the input is not finite).
    """
    x = _check_matrix(z, "covariance_spectrum")
    if not bool(torch.isfinite(x).all()):
        return torch.full((x.shape[1],), math.nan, dtype=torch.float64, device=x.device)
    if normalize:
        x = l2_normalize(x)
    centred = x - x.mean(dim=0, keepdim=True)
    # the eigenvalues of C = X_c^T X_c / N are the squared singular values of X_c over N (more
    # accurate than forming C, and svdvals is much faster than eigvalsh here on the CPU)
    eigenvalues = torch.linalg.svdvals(centred).pow(2) / x.shape[0]
    if eigenvalues.numel() < x.shape[1]:  # fewer rows than dimensions: the rest are zeros
        eigenvalues = F.pad(eigenvalues, (0, x.shape[1] - eigenvalues.numel()))
    return eigenvalues


def spectrum_share(eigenvalues: Tensor, k: int = 5) -> float:
    """Share of the total variance in the ``k`` largest of ``eigenvalues`` (sorted largest
    first, as :func:`covariance_spectrum` returns them); NaN when there is no variance."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    total = float(eigenvalues.sum())
    if not math.isfinite(total) or total <= 0:
        return math.nan
    return float(eigenvalues[:k].sum()) / total


@torch.no_grad()
def top_eigenvalue_ratio(z: Tensor, k: int = 5, normalize: bool = True) -> float:
    """Share of the embedding covariance's variance in its ``k`` largest eigenvalues, in
    [min(k, D) / D, 1]:

        r_k = (lambda_1 + ... + lambda_k) / (lambda_1 + ... + lambda_D)

    with the eigenvalues of :func:`covariance_spectrum` (of L2-normalised embeddings when
    ``normalize``). It is k / D when the variance is spread evenly over all D directions and 1
    when the embeddings vary along k directions or fewer: the concentration of the spectrum
    that dimensional collapse produces (Jing et al. 2022), in one number. NaN when the
    embeddings have no variance (complete collapse) or are not finite.
    """
    return spectrum_share(covariance_spectrum(z, normalize), k)


@torch.no_grad()
def normalized_std(z: Tensor) -> float:
    """Mean over dimensions of the per-dimension standard deviation of L2-normalised embeddings.

        std = 1/D sum_d sqrt( 1/N sum_i (f(x_i)_d - mean_d)^2 ),   f(x) = z / ||z||_2

    Chen & He (2021, sec. 4.1): about 1/sqrt(D) when the embeddings are spread over the sphere,
    0 on complete collapse (every image mapped to the same point).
    """
    x = l2_normalize(_check_matrix(z, "normalized_std"))
    return float(x.std(dim=0, correction=0).mean())


@torch.no_grad()
def pair_cosines(z1: Tensor, z2: Tensor) -> tuple[float, float]:
    """Mean cosine similarity of positive pairs and of negative pairs.

        positive = 1/N sum_i cos(z1_i, z2_i),
        negative = 1/(N(N-1)) sum_{i != j} cos(z1_i, z2_j)

    Healthy: positive near 1, negative near 0. Complete collapse: both near 1.
    """
    a, b = _check_pair(z1, z2, "pair_cosines", min_rows=2)
    similarity = l2_normalize(a) @ l2_normalize(b).T
    n = similarity.shape[0]
    positive = similarity.diagonal().sum()
    negative = (similarity.sum() - positive) / (n * (n - 1))
    return float(positive / n), float(negative)


def diagnose_embeddings(z1: Tensor, z2: Tensor,
                        spectrum_size: int = SPECTRUM_SIZE) -> dict[str, Any]:
    """All diagnostics of two views' embeddings (row i of ``z1`` and ``z2``: one image).

    Returns a JSON-ready dict:

    * ``n``, ``dim``: images and embedding dimension D;
    * ``alignment`` (alpha = 2) and ``uniformity`` (t = 2, the mean over the two views, as in
      Wang & Isola's code);
    * ``effective_rank`` (RankMe over both views' 2N rows) and ``effective_rank_ratio`` (over its
      maximum ``min(2N, D)``);
    * ``top5_eigenvalue_ratio``: the share of the covariance's variance in its 5 largest
      eigenvalues (:func:`top_eigenvalue_ratio`; both views, L2-normalised);
    * ``normalized_std`` (both views) and ``normalized_std_ratio`` = ``normalized_std *
      sqrt(D)``: about 1 when spread out, 0 on complete collapse;
    * ``positive_cosine``, ``negative_cosine``;
    * ``spectrum``: the first ``spectrum_size`` covariance eigenvalues (largest first, both views,
      L2-normalised), rounded to 4 significant digits.

    Non-finite values (a diverged model) are reported as ``None``.
    """
    a, b = _check_pair(z1, z2, "diagnose_embeddings", min_rows=2)
    both = torch.cat([a, b])
    n, dim = a.shape
    std = normalized_std(both)
    rank = effective_rank(both)
    positive, negative = pair_cosines(a, b)
    eigenvalues = covariance_spectrum(both)
    spectrum = eigenvalues[:spectrum_size].cpu().tolist()
    values: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "alignment": alignment(a, b),
        "uniformity": (uniformity(a) + uniformity(b)) / 2,
        "effective_rank": rank,
        "effective_rank_ratio": rank / min(2 * n, dim),
        "top5_eigenvalue_ratio": spectrum_share(eigenvalues, 5),
        "normalized_std": std,
        "normalized_std_ratio": std * math.sqrt(dim),
        "positive_cosine": positive,
        "negative_cosine": negative,
    }
    values = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
              for k, v in values.items()}
    values["spectrum"] = [float(f"{v:.4g}") if math.isfinite(v) else None for v in spectrum]
    return values


ViewMaker = Callable[[Tensor, torch.Generator], list[Tensor]]


@torch.no_grad()
def diagnose_method(
    method: torch.nn.Module,
    images: Tensor,
    views: ViewMaker,
    device: torch.device | str = "cpu",
    max_images: int = 2000,
    seed: int = 0,
    batch_size: int = 500,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, dict[str, Any]]:
    """Diagnostics of a method's projector (``method.project``) and backbone (``method.encode``).

    A seeded subset of at most ``max_images`` of the uint8 ``images`` (N, C, H, W) is augmented
    twice by ``views`` (e.g. the run's :class:`~contrastlab.views.AugmentedViews`, so with the run's
    normalisation) and embedded in eval mode; :func:`diagnose_embeddings` is applied to both
    spaces. The random draws come from a private generator seeded with ``seed`` (the same subset
    and views every call, and no global or training RNG state is touched); the method's
    train/eval mode is restored afterwards.

    Returns ``{"projector": {...}, "backbone": {...}}``.
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"diagnose_method: need at least 2 images (N, C, H, W), got "
                         f"{tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(images), generator=generator)[:max_images].sort().values
    was_training = method.training
    method.eval()
    outputs: dict[str, list[list[Tensor]]] = {"projector": [[], []], "backbone": [[], []]}
    try:
        for start in range(0, len(subset), batch_size):
            batch = images[subset[start:start + batch_size]].to(device)
            pair = list(views(batch, generator))
            while len(pair) < 2:  # one-view recipes: draw again for the second view
                pair += list(views(batch, generator))
            for slot, view in enumerate(pair[:2]):
                view = view.contiguous(memory_format=memory_format)
                features = method.encode(view)
                outputs["backbone"][slot].append(features.float().cpu())
                outputs["projector"][slot].append(method.project(view).float().cpu())
    finally:
        method.train(was_training)
    return {space: diagnose_embeddings(torch.cat(first), torch.cat(second))
            for space, (first, second) in outputs.items()}


__all__ = ["SPECTRUM_SIZE", "alignment", "covariance_spectrum", "diagnose_embeddings",
           "diagnose_method", "effective_rank", "l2_normalize", "normalized_std", "pair_cosines",
           "spectrum_share", "top_eigenvalue_ratio", "uniformity"]
