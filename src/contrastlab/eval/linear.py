"""Linear probe: multinomial logistic regression on frozen, standardised features.

The standard linear evaluation protocol (e.g. Chen et al. 2020, Sec. 4.2; Kolesnikov et al. 2019):
the encoder is frozen, a linear classifier is trained on its features of the training set and
scored on the test set. Features are standardised with the training set's mean and std; the
inverse regularisation strength C is chosen from a small grid on a stratified 10% validation part
of the training set, then the classifier is refitted on the whole training set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import Tensor


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    classifier = LogisticRegression(C=c, max_iter=max_iter, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(x, y)
    return classifier


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    c_grid: Sequence[float] = (0.1, 1.0, 10.0),
    max_iter: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the probe and return ``{"linear_top1": accuracy, "linear_C": chosen C}``."""
    scaler = StandardScaler()
    x_train = scaler.fit_transform(train_features.double().numpy())
    x_test = scaler.transform(test_features.double().numpy())
    y_train = train_labels.numpy()
    y_test = test_labels.numpy()
    best_c = c_grid[0]
    counts = np.bincount(y_train)
    if len(c_grid) > 1 and counts[counts > 0].min() >= 2 and len(y_train) >= 20:
        fit_idx, val_idx = train_test_split(
            np.arange(len(y_train)), test_size=0.1, stratify=y_train, random_state=seed
        )
        scores = []
        for c in c_grid:
            classifier = _fit(x_train[fit_idx], y_train[fit_idx], c, max_iter)
            scores.append(classifier.score(x_train[val_idx], y_train[val_idx]))
        best_c = c_grid[int(np.argmax(scores))]
    classifier = _fit(x_train, y_train, best_c, max_iter)
    return {"linear_top1": float(classifier.score(x_test, y_test)), "linear_C": float(best_c)}
