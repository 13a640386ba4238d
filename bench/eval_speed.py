"""Evaluation speed: weighted kNN and the linear probe on 50,000 x 512 training features against
10,000 x 512 test features (synthetic, clustered: 10 Gaussian classes whose centres are close
enough that neither protocol is perfect), on the CPU.

    python bench/eval_speed.py [--train 50000] [--test 10000] [--dim 512] [--sklearn] [--markdown]

``--sklearn`` also times the previous linear probe (scikit-learn lbfgs in float64 with the same
C grid and validation split) for comparison; it takes minutes. Wall-clock seconds and the
process's CPU seconds are both printed: on a busy shared machine the wall time mostly measures
the other work (with ``--threads 1`` the CPU seconds approximate the wall time on an idle core).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from common import emit, machine

from contrastlab.eval import knn_accuracy, linear_probe


def clustered_features(n: int, dim: int, classes: int, generator: torch.Generator,
                       centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` float32 features around the class ``centres`` (unit Gaussian noise), and labels."""
    labels = torch.randint(0, classes, (n,), generator=generator)
    features = centres[labels] + torch.randn(n, dim, generator=generator)
    return features.relu(), labels  # non-negative, like pooled ReLU backbone features


def sklearn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                  test_y: torch.Tensor, grid: tuple[float, ...] = (0.1, 1.0, 10.0)) -> dict:
    """The previous implementation: StandardScaler + LogisticRegression(lbfgs) per C, float64."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    x = scaler.fit_transform(train_x.double().numpy())
    xt = scaler.transform(test_x.double().numpy())
    y = train_y.numpy()
    fit_idx, val_idx = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y,
                                        random_state=0)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in grid:
            model = LogisticRegression(C=c, max_iter=500, tol=1e-4).fit(x[fit_idx], y[fit_idx])
            scores.append(model.score(x[val_idx], y[val_idx]))
        best = grid[int(np.argmax(scores))]
        model = LogisticRegression(C=best, max_iter=500, tol=1e-4).fit(x, y)
    return {"linear_top1": float(model.score(xt, test_y.numpy())), "linear_C": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--spread", type=float, default=0.12,
                        help="Scale of the class centres (smaller: harder).")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sklearn", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.dim, generator=generator) * args.spread
    train_x, train_y = clustered_features(args.train, args.dim, args.classes, generator, centres)
    test_x, test_y = clustered_features(args.test, args.dim, args.classes, generator, centres)

    start, cpu = time.perf_counter(), time.process_time()
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=200, temperature=0.1)
    knn_s, knn_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    linear = linear_probe(train_x, train_y, test_x, test_y)
    linear_s, linear_cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "benchmark": "eval_speed",
        "n_train": args.train, "n_test": args.test, "dim": args.dim, "classes": args.classes,
        "knn_seconds": round(knn_s, 2), "knn_top1": round(knn, 4),
        "linear_seconds": round(linear_s, 2), "linear_top1": round(linear["linear_top1"], 4),
        "linear_C": linear["linear_C"],
        "total_seconds": round(knn_s + linear_s, 2),
        # CPU time of this process (all its threads): with --threads 1 it is what the work
        # costs, whatever else the shared machine is running
        "knn_cpu_seconds": round(knn_cpu, 2), "linear_cpu_seconds": round(linear_cpu, 2),
        **machine(),
    }
    if args.sklearn:
        start = time.perf_counter()
        reference = sklearn_probe(train_x, train_y, test_x, test_y)
        result["sklearn_linear_seconds"] = round(time.perf_counter() - start, 2)
        result["sklearn_linear_top1"] = round(reference["linear_top1"], 4)
        result["sklearn_linear_C"] = reference["linear_C"]
    row = (f"| {args.train:,} x {args.dim} / {args.test:,} | {knn_s:.1f} s | {100 * knn:.2f}% | "
           f"{linear_s:.1f} s | {100 * linear['linear_top1']:.2f}% |")
    emit(result, row if args.markdown else None)


if __name__ == "__main__":
    main()
