"""The torch L-BFGS linear probe against a direct objective and against scikit-learn."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from contrastlab.eval.lbfgs import lbfgs_minimize
from contrastlab.eval.linear import (
    CROSS_VALIDATION_BELOW,
    Standardizer,
    fit_logistic_regression,
    linear_probe,
    logistic_objective,
    logistic_value_and_grad,
    validation_folds,
)
from contrastlab.eval.threads import single_thread_if_small


def objective_direct(weight, bias, x, y, c):
    """(1/N) sum_i [log sum_k exp(w_k.x_i + b_k) - (w_y.x_i + b_y)] + ||W||^2 / (2 C N)."""
    n, total = x.shape[0], 0.0
    for i in range(n):
        scores = [sum(weight[k, d] * x[i, d] for d in range(x.shape[1])) + bias[k]
                  for k in range(weight.shape[0])]
        top = max(scores)
        total += top + math.log(sum(math.exp(s - top) for s in scores)) - scores[int(y[i])]
    penalty = sum(float(w) ** 2 for w in weight.flatten())
    return total / n + penalty / (2 * c * n)


def test_objective_value_and_gradient_match_direct_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=generator)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    value = logistic_objective(weight, bias, x, y, c=0.7)
    value.backward()
    closed_value, closed_w, closed_b = logistic_value_and_grad(weight.detach(), bias.detach(),
                                                                x, y, c=0.7)
    w, b = weight.detach().numpy(), bias.detach().numpy()
    direct = objective_direct(w, b, x.numpy(), y.numpy(), 0.7)
    assert float(value.detach()) == pytest.approx(direct, abs=1e-10)
    assert float(closed_value) == pytest.approx(direct, abs=1e-10)
    eps = 1e-6  # central differences of the direct formula
    for array, grads in ((w, (weight.grad, closed_w)), (b, (bias.grad, closed_b))):
        for index in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += eps
            minus[index] -= eps
            args = (plus, b) if array is w else (w, plus)
            args_minus = (minus, b) if array is w else (w, minus)
            numeric = (objective_direct(*args, x.numpy(), y.numpy(), 0.7)
                       - objective_direct(*args_minus, x.numpy(), y.numpy(), 0.7)) / (2 * eps)
            for grad in grads:
                assert float(grad[index]) == pytest.approx(numeric, abs=1e-5)


def test_lbfgs_finds_the_minimum_of_a_quadratic_and_rosenbrock() -> None:
    generator = torch.Generator().manual_seed(3)
    m = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    a = m @ m.t() + 0.5 * torch.eye(8, dtype=torch.float64)  # positive definite
    b = torch.randn(8, generator=generator, dtype=torch.float64)
    solution = lbfgs_minimize(lambda v: (0.5 * v @ a @ v - b @ v, a @ v - b),
                              torch.zeros(8, dtype=torch.float64), max_iter=500,
                              tolerance_grad=1e-12, tolerance_change=0.0)
    assert torch.allclose(solution, torch.linalg.solve(a, b), atol=1e-9)

    def rosenbrock(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = v[0], v[1]
        value = (1 - x) ** 2 + 100 * (y - x**2) ** 2
        grad = torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])
        return value, grad

    found = lbfgs_minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64),
                           max_iter=2000, tolerance_grad=1e-10, tolerance_change=0.0)
    assert torch.allclose(found, torch.ones(2, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_fit_reaches_sklearn_minimum(c: float) -> None:
    """Same objective as LogisticRegression(C) up to the factor C*N: same minimiser."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat(40)
    x = torch.randn(120, 6, generator=generator, dtype=torch.float64) + labels[:, None] * 0.8
    weight, bias = fit_logistic_regression(x, labels, 3, c, max_iter=1000, tolerance=1e-10,
                                           tolerance_change=0.0)
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x.numpy(), labels.numpy())
    ref_w = torch.from_numpy(reference.coef_)
    ref_b = torch.from_numpy(reference.intercept_)
    ours = float(logistic_objective(weight, bias, x, labels, c))
    theirs = float(logistic_objective(ref_w, ref_b, x, labels, c))
    assert ours <= theirs + 1e-9
    # softmax is invariant to adding a constant to every class: compare centred parameters
    assert torch.allclose(weight - weight.mean(0), ref_w - ref_w.mean(0), atol=1e-4)
    assert torch.allclose(bias - bias.mean(), ref_b - ref_b.mean(), atol=1e-4)


def sklearn_probe_accuracy(train_x, train_y, test_x, test_y, c: float) -> float:
    scaler = StandardScaler().fit(train_x.double().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(train_x.numpy()),
                                                           train_y.numpy())
    return float(model.score(scaler.transform(test_x.numpy()), test_y.numpy()))


def test_probe_accuracy_matches_sklearn_within_a_point() -> None:
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(5, 32, generator=generator) * 0.5
    train_y = torch.randint(0, 5, (1500,), generator=generator)
    test_y = torch.randint(0, 5, (1000,), generator=generator)
    train_x = (centres[train_y] + torch.randn(1500, 32, generator=generator)).relu()
    test_x = (centres[test_y] + torch.randn(1000, 32, generator=generator)).relu()
    result = linear_probe(train_x, train_y, test_x, test_y)
    reference = sklearn_probe_accuracy(train_x, train_y, test_x, test_y, result["linear_C"])
    assert 0.4 < reference < 0.99  # neither trivial nor chance
    assert abs(result["linear_top1"] - reference) <= 0.01


def test_standardizer_matches_sklearn_and_keeps_constant_features() -> None:
    x = torch.randn(50, 4, dtype=torch.float64)
    x[:, 2] = 3.0
    ours = Standardizer.fit(x)(x)
    assert torch.allclose(ours, torch.from_numpy(StandardScaler().fit_transform(x.numpy())).float(),
                          atol=1e-5)


def test_validation_folds() -> None:
    small = np.repeat(np.arange(10), 8)  # 1% of an MNIST-sized split
    folds = validation_folds(small, seed=0)
    assert len(folds) == 5
    for fit_idx, val_idx in folds:
        assert len(np.intersect1d(fit_idx, val_idx)) == 0 and len(fit_idx) + len(val_idx) == 80
        assert set(small[val_idx]) == set(range(10))
    large = np.repeat(np.arange(10), CROSS_VALIDATION_BELOW // 10 + 5)
    (fit_idx, val_idx), = validation_folds(large, seed=0)
    assert len(val_idx) == round(0.1 * len(large))
    assert validation_folds(np.array([0, 0, 1, 2, 2]), seed=0) == []  # class 1 has one image


def test_single_thread_only_for_small_work_and_restored() -> None:
    before = torch.get_num_threads()
    with single_thread_if_small(10):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with single_thread_if_small(1 << 30):
        assert torch.get_num_threads() == before
