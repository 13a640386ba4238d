"""MNIST benchmark: SimCLR with the small ConvNet for a fixed wall-time budget on this machine,
then kNN and linear-probe accuracy on the held-out part of the seeded stratified 8,000 / 2,000
split of the MNIST test set, printed beside the raw-pixel baselines.

    python bench/mnist_simclr.py --time-budget 300 [--device cpu] [--markdown]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch
from common import emit, machine, shared_path
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.data import load_dataset
from contrastlab.eval import score_features
from contrastlab.recipes import load_recipe

# The recipe of the MNIST figure is the shipped one (contrastlab train --recipe mnist-simclr;
# src/contrastlab/recipes/mnist-simclr.yaml): a user's run and this figure cannot drift apart.
RECIPE = "mnist-simclr"


def raw_pixel_baselines(spec: str) -> dict[str, float]:
    splits = load_dataset(spec)
    assert splits.test is not None and splits.train.labels is not None
    train_x = splits.train.images.flatten(1).float() / 255
    test_x = splits.test.images.flatten(1).float() / 255
    knn = score_features(train_x, splits.train.labels, test_x, splits.test.labels,
                         protocols=("knn",), k=1)
    linear = score_features(train_x, splits.train.labels, test_x, splits.test.labels,
                            protocols=("linear",))
    return {"raw_knn1_top1": knn["knn_top1"], "raw_linear_top1": linear["linear_top1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--out", default=None,
                        help="keep the run here (default: a temporary folder, deleted)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    spec = str(shared_path("mnist-test"))
    out = args.out or tempfile.mkdtemp(prefix="bench-mnist-")
    config = build_config(None, {"data": spec, "out": out, "seed": args.seed,
                                 "time_budget": args.time_budget, "device": args.device},
                          recipe=load_recipe(RECIPE).settings, recipe_name=RECIPE)
    start = time.perf_counter()
    result = train(config, console=Console(stderr=True))
    wall = time.perf_counter() - start
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    metrics = result.metrics
    figures = {
        "benchmark": "mnist_simclr",
        "time_budget_s": args.time_budget,
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": round(wall, 1),
        "epochs": metrics["epoch"],
        "steps": metrics["step"],
        "knn_top1": metrics["knn_top1"],
        "linear_top1": metrics["linear_top1"],
        "n_train": metrics["n_train"],
        "n_test": metrics["n_test"],
        "recipe": RECIPE,
        "recipe_settings": dict(load_recipe(RECIPE).settings),
        "device": args.device,
        **machine(),
    }
    if not args.no_baselines:
        figures.update(raw_pixel_baselines(spec))
    row = (f"| MNIST SimCLR convnet, {args.time_budget:.0f} s on {args.device} | "
           f"{metrics['epoch']} epochs | kNN {100 * metrics['knn_top1']:.2f}% | "
           f"linear {100 * metrics['linear_top1']:.2f}% |")
    emit(figures, row if args.markdown else None)


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
