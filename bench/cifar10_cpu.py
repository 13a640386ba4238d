"""CIFAR-10 on the CPU, side by side: contrastlab's CPU recipe against the field's usual
pipeline built from LightlySSL, the same backbone and the same wall budget, one after the other,
both scored by the same kNN (k=200) and linear-probe code on the official test split.

    python bench/cifar10_cpu.py --budget 600 --markdown           # both sides, 10 minutes each
    python bench/cifar10_cpu.py --side ours --budget 120           # a quick look at one side

Ours: ``contrastlab.train(recipe=RECIPE, data=FOLDER, time_budget=BUDGET)`` (the images decoded
once into memory, views batched; the recipe is the shipped file, so this figure and a user's run
are the same thing). The peer, written as a user of LightlySSL (pip install lightly) writes it,
with LightlySSL's CIFAR-10 benchmark settings: torchvision ``ImageFolder`` + lightly's per-sample
``SimCLRTransform(input_size=32, gaussian_blur=0)`` in DataLoader workers, ``SimCLRProjectionHead``
(hidden 512, out 128), ``NTXentLoss`` (temperature 0.5), SGD (lr 0.06 x batch / 128, momentum 0.9,
weight decay 5e-4) with a cosine schedule laid over the same wall budget (``--peer-optimizer
adamw``: AdamW lr 1e-3, the variant the issue's reference measurement used). The backbone is the
recipe's, built by ``contrastlab.models.build_backbone`` for both. Data: the shared
``cifar10-jpg.tar.gz`` extracted once to a temporary folder (not counted in either budget).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import emit, machine, shared_path
from rich.console import Console
from torch import nn

RECIPE = "cifar10-convnet-cpu"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cifar_folder(data: str | None, scratch: Path) -> Path:
    """A folder with train/ and test/ class sub-folders: ``data`` or the shared tarball
    extracted into ``scratch``."""
    if data is not None:
        return Path(data)
    with tarfile.open(shared_path("cifar10-jpg.tar.gz")) as archive:
        archive.extractall(scratch, filter="data")
    return scratch


def run_ours(folder: Path, budget: float, recipe: str, seed: int) -> dict[str, Any]:
    import contrastlab

    out = Path(tempfile.mkdtemp(prefix="bench-cifar-ours-"))
    try:
        start = time.perf_counter()
        result = contrastlab.train(recipe=recipe, data=str(folder), time_budget=budget,
                                   out=str(out / "run"), seed=seed,
                                   console=Console(stderr=True))
        wall = time.perf_counter() - start
        metrics, batch = result.metrics, batch_of(out / "run")
        return {
            "knn_top1": metrics["knn_top1"], "linear_top1": metrics["linear_top1"],
            "train_seconds": metrics["train_seconds"], "steps": metrics["step"],
            "epochs": round(metrics["step"] * batch / metrics["n_train"], 2),
            "images_per_s": round(metrics["step"] * batch / metrics["train_seconds"], 1),
            "wall_seconds": round(wall, 1), "batch_size": batch,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def batch_of(run: Path) -> int:
    import yaml

    return int(yaml.safe_load((run / "config.yaml").read_text())["schedule"]["batch_size"])


def run_peer(folder: Path, budget: float, backbone_name: str, batch: int, workers: int,
             optimizer_name: str, seed: int) -> dict[str, Any]:
    """LightlySSL's SimCLR as its CIFAR-10 benchmark writes it, for ``budget`` seconds."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    from contrastlab.models import build_backbone

    torch.manual_seed(seed)
    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    dataset = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    backbone = build_backbone(backbone_name, 3)
    head = SimCLRProjectionHead(backbone.output_dim, 512, 128)
    model = nn.Sequential(backbone, head)
    criterion = NTXentLoss(temperature=0.5)
    if optimizer_name == "sgd":
        base_lr = 6e-2 * batch / 128
        optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9,
                                    weight_decay=5e-4)
    else:
        base_lr = 1e-3
        optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr)
    model.train()
    trained, steps, images = 0.0, 0, 0
    start = time.perf_counter()
    while trained < budget:
        for (x0, x1), _ in loader:
            for group in optimizer.param_groups:  # cosine over the wall budget
                group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * min(trained / budget, 1)))
            z0, z1 = model(x0), model(x1)
            loss = criterion(z0, z1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            images += len(x0)
            trained = time.perf_counter() - start  # data loading included, as a user sees it
            if trained >= budget:
                break
    train_seconds = time.perf_counter() - start
    scores = evaluate_peer(backbone, folder)
    return {**scores, "train_seconds": round(train_seconds, 1), "steps": steps,
            "epochs": round(images / len(dataset), 2),
            "images_per_s": round(images / train_seconds, 1), "optimizer": optimizer_name,
            "batch_size": batch, "workers": workers}


def evaluate_peer(backbone: nn.Module, folder: Path) -> dict[str, float]:
    """The same kNN and linear-probe code as ours, on the peer's backbone with its own test
    transform (ToTensor + ImageNet normalisation)."""
    from contrastlab.data import load_dataset
    from contrastlab.eval import evaluate_features

    splits = load_dataset(str(folder))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean) / std

    backbone.eval()
    with torch.no_grad():
        return evaluate_features(backbone, splits.train, splits.test, prepare, "cpu",
                                 protocols=("knn", "linear"), k=200, temperature=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training each")
    parser.add_argument("--side", choices=("both", "ours", "peer"), default="both")
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--data", default=None, help="a CIFAR-10 folder (train/, test/); "
                        "default: the shared tarball, extracted to a temporary folder")
    parser.add_argument("--peer-batch", type=int, default=128)
    parser.add_argument("--peer-workers", type=int, default=2)
    parser.add_argument("--peer-optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    from contrastlab.recipes import load_recipe

    recipe = load_recipe(args.recipe)
    backbone = str(recipe.settings.get("backbone", "convnet"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-cifar-data-"))
    try:
        folder = cifar_folder(args.data, scratch)
        result: dict[str, Any] = {"benchmark": "cifar10_cpu", "budget_s": args.budget,
                                  "recipe": args.recipe, "backbone": backbone,
                                  "machine": machine()}
        if args.side in ("both", "ours"):
            result["ours"] = run_ours(folder, args.budget, args.recipe, args.seed)
        if args.side in ("both", "peer"):
            result["peer"] = run_peer(folder, args.budget, backbone, args.peer_batch,
                                      args.peer_workers, args.peer_optimizer, args.seed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    row = None
    if "ours" in result and "peer" in result:
        ours, peer = result["ours"], result["peer"]
        result["knn_points_over_peer"] = round(100 * (ours["knn_top1"] - peer["knn_top1"]), 2)
        result["images_per_s_ratio"] = round(ours["images_per_s"] / peer["images_per_s"], 2)
        row = (f"| CIFAR-10, {backbone}, {args.budget:.0f} s | ours ({args.recipe}) kNN "
               f"{100 * ours['knn_top1']:.2f}% / linear {100 * ours['linear_top1']:.2f}%, "
               f"{ours['images_per_s']:.0f} img/s, {ours['epochs']} epochs | LightlySSL "
               f"({args.peer_optimizer}) kNN {100 * peer['knn_top1']:.2f}% / linear "
               f"{100 * peer['linear_top1']:.2f}%, {peer['images_per_s']:.0f} img/s, "
               f"{peer['epochs']} epochs | +{result['knn_points_over_peer']:.2f} kNN points, "
               f"{result['images_per_s_ratio']}x img/s |")
    emit(result, row if args.markdown else None)


if __name__ == "__main__":
    main()
