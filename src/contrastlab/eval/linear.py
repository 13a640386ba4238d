r"""Linear probe: multinomial logistic regression on frozen, standardised features.

The standard linear evaluation protocol (e.g. Chen et al. 2020, Sec. 4.2; Kolesnikov et al. 2019):
the encoder is frozen, a linear classifier is trained on its features of the training set and
scored on the test set. Features are standardised with the training set's mean and std; the
inverse regularisation strength C is chosen from a small grid on a stratified validation part of
the training set (10%, at least one image per class; k-fold cross-validation for training sets
under 2,000 images, such as 1% of the labels), then the classifier is refitted on the whole
training set.

The classifier minimises the L2-regularised multinomial cross-entropy (the objective of
scikit-learn's ``LogisticRegression(C=C)``, divided by :math:`CN` so its scale does not grow
with N; the bias is not penalised):

.. math::  J(W, b) = \frac{1}{N} \sum_{i=1}^{N} \Big[\log \sum_k e^{w_k^\top x_i + b_k}
           - (w_{y_i}^\top x_i + b_{y_i})\Big] + \frac{1}{2CN} \lVert W \rVert_F^2

It is solved full-batch in float32 by L-BFGS (:mod:`contrastlab.eval.lbfgs`) with the gradient
in closed form, on the features' device. The C grid is walked from the strongest regularisation
up, each fit starting from the previous solution (a warm-started regularisation path), and the
final refit starts from the chosen C's solution. On 50,000 x 512 features this is several times
faster than scikit-learn's lbfgs in float64, at the same accuracy
(see docs/benchmarks.md and tests/eval/test_linear_probe.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import Tensor

from contrastlab.eval.lbfgs import lbfgs_minimize
from contrastlab.eval.threads import single_thread_if_small
from contrastlab.phases import Phase, phase


@dataclass
class Standardizer:
    """Per-feature ``(x - mean) / std`` with statistics of the training features (std 0 -> 1)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, features: Tensor) -> Standardizer:
        x = features.double()
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        std[std == 0] = 1.0
        return cls(mean.float(), std.float())

    def __call__(self, features: Tensor) -> Tensor:
        return (features.float() - self.mean.to(features.device)) / self.std.to(features.device)


def logistic_objective(
    weight: Tensor, bias: Tensor, x: Tensor, y: Tensor, c: float
) -> Tensor:
    """:math:`J(W, b)` of the module docstring (mean cross-entropy + ||W||^2 / (2CN))."""
    logits = x @ weight.t() + bias
    return F.cross_entropy(logits, y) + weight.pow(2).sum() / (2.0 * c * x.shape[0])


def logistic_value_and_grad(
    weight: Tensor, bias: Tensor, x: Tensor, y: Tensor, c: float
) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`J(W, b)` and its gradient in closed form (no autograd graph):

    .. math::  \nabla_W J = \tfrac1N (P - Y)^\top X + \tfrac{1}{CN} W, \qquad
               \nabla_b J = \tfrac1N \textstyle\sum_i (p_i - y_i)

    with :math:`P` the softmax probabilities and :math:`Y` the one-hot labels.
    """
    n = x.shape[0]
    logits = x @ weight.t() + bias
    log_p = logits.log_softmax(dim=1)
    value = -log_p.gather(1, y.unsqueeze(1)).mean() + weight.pow(2).sum() / (2.0 * c * n)
    residual = log_p.exp()
    residual[torch.arange(n, device=x.device), y] -= 1.0
    residual /= n
    return value, residual.t() @ x + weight / (c * n), residual.sum(dim=0)


def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    c: float,
    max_iter: int = 200,
    init: tuple[Tensor, Tensor] | None = None,
    tolerance: float = 1e-5,
    tolerance_change: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    """Minimise :func:`logistic_objective` with full-batch L-BFGS; returns ``(W (K, D), b (K,))``.

    ``x`` is float (N, D) (standardised by the caller), ``y`` int64 (N,) in ``0..K-1``; ``init``
    warm-starts from a previous solution. Stops after ``max_iter`` iterations, when the largest
    gradient entry falls below ``tolerance`` or when the objective stalls (relative decrease below
    ``tolerance_change``), see :func:`contrastlab.eval.lbfgs.lbfgs_minimize`.
    """
    if c <= 0:
        raise ValueError(f"C must be > 0, got {c}")
    dim = x.shape[1]
    size = num_classes * dim
    if init is None:
        start = torch.zeros(size + num_classes, device=x.device, dtype=x.dtype)
    else:
        start = torch.cat([init[0].flatten(), init[1]]).to(x.device, x.dtype)

    def value_and_grad(params: Tensor) -> tuple[Tensor, Tensor]:
        weight, bias = params[:size].view(num_classes, dim), params[size:]
        value, grad_weight, grad_bias = logistic_value_and_grad(weight, bias, x, y, c)
        return value, torch.cat([grad_weight.flatten(), grad_bias])

    with torch.no_grad(), single_thread_if_small(x.numel(), x.device):
        params = lbfgs_minimize(value_and_grad, start, max_iter, tolerance, tolerance_change)
    return params[:size].view(num_classes, dim).clone(), params[size:].clone()


def predict(weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    """Predicted classes (int64) of a fitted linear classifier."""
    return (x @ weight.t() + bias).argmax(dim=1)


def _accuracy(weight: Tensor, bias: Tensor, x: Tensor, y: Tensor) -> float:
    return float((predict(weight, bias, x) == y).float().mean())


CROSS_VALIDATION_BELOW = 2000
"""Training sets smaller than this choose C by stratified k-fold cross-validation."""


def validation_folds(labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, validation) index pairs for choosing C, stratified by class.

    One split with 10% (at least one image per class) held out; below
    :data:`CROSS_VALIDATION_BELOW` images, where one such split would hold only a handful of
    images (e.g. 1% of the labels), ``min(5, smallest class)``-fold cross-validation instead.
    Empty when some class has fewer than 2 images (C is then not searched).
    """
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        return []
    indices = np.arange(len(labels))
    if len(labels) < CROSS_VALIDATION_BELOW:
        folds = StratifiedKFold(n_splits=int(min(5, present.min())), shuffle=True,
                                random_state=seed)
        return [(np.sort(a), np.sort(b)) for a, b in folds.split(indices, labels)]
    val_size = max(round(0.1 * len(labels)), len(present))
    fit_idx, val_idx = train_test_split(indices, test_size=val_size, stratify=labels,
                                        random_state=seed)
    return [(np.sort(fit_idx), np.sort(val_idx))]


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    c_grid: Sequence[float] = (0.1, 1.0, 10.0),
    max_iter: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the probe and return ``{"linear_top1": accuracy, "linear_C": chosen C}``.

    Runs on ``train_features.device`` (on one thread for small CPU problems, see
    :mod:`contrastlab.eval.threads`); ``max_iter`` bounds the L-BFGS iterations of each fit.
    """
    with single_thread_if_small(train_features.numel(), train_features.device):
        return _linear_probe(train_features, train_labels, test_features, test_labels, c_grid,
                             max_iter, seed)


def _linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    c_grid: Sequence[float],
    max_iter: int,
    seed: int,
) -> dict[str, float]:
    if not c_grid:
        raise ValueError("c_grid must hold at least one value of C")
    device = train_features.device
    scaler = Standardizer.fit(train_features)
    x_train = scaler(train_features)
    x_test = scaler(test_features.to(device))
    y_train = train_labels.to(device).long()
    y_test = test_labels.to(device).long()
    num_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    grid = sorted(float(c) for c in c_grid)
    folds = validation_folds(train_labels.cpu().numpy(), seed) if len(grid) > 1 else []
    with phase("fitting the linear probe", total=len(grid) * len(folds) + 1,
               unit="fits") as progress:
        return _fit_and_score(x_train, y_train, x_test, y_test, num_classes, grid, folds,
                              max_iter, device, progress)


def _fit_and_score(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                   num_classes: int, grid: list[float], folds: list, max_iter: int,
                   device: torch.device, progress: Phase) -> dict[str, float]:
    """C chosen on the validation folds (strongest regularisation first, warm-started), then the
    fit on the whole training split, scored on the test split."""
    best_c, init = grid[0], None
    if folds:
        parts = [(torch.as_tensor(a, device=device), torch.as_tensor(b, device=device))
                 for a, b in folds]
        previous: list[tuple[Tensor, Tensor] | None] = [None] * len(parts)
        best_score = -1.0
        for c in grid:  # strongest regularisation first, each fit warm-started from the last
            scores = []
            for f, (fit_idx, val_idx) in enumerate(parts):
                solution = fit_logistic_regression(x_train[fit_idx], y_train[fit_idx],
                                                   num_classes, c, max_iter, previous[f])
                scores.append(_accuracy(*solution, x_train[val_idx], y_train[val_idx]))
                previous[f] = solution
                progress.advance()
            score = float(np.mean(scores))
            if score > best_score:
                best_c, best_score, init = c, score, previous[0]
    weight, bias = fit_logistic_regression(x_train, y_train, num_classes, best_c, max_iter, init)
    progress.advance()
    return {"linear_top1": _accuracy(weight, bias, x_test, y_test), "linear_C": best_c}
