"""CIFAR-10 on one GPU: ResNet-18 (CIFAR stem) from scratch with a shipped recipe, 8 minutes of
training, then kNN (k=200) and the linear probe; and what keeps the GPU fed.

    python bench/cifar10_gpu.py --part train               # ~9 min: train 480 s + evaluate
    python bench/cifar10_gpu.py --part levers              # ~3 min: step breakdown, levers, peer
    python bench/cifar10_gpu.py --tiny                     # both parts in a minute on the CPU

``--part train`` runs ``contrastlab.train(recipe=RECIPE, data=FOLDER, time_budget=480)`` and
samples the GPU's utilisation (nvidia-smi, once a second) while it trains. ``--part levers``
times one training step phase by phase (data, views, backbone forward, head and loss, backward,
optimiser; synchronised between phases), the images/s of each lever alone and together (the
dataset resident on the GPU, channels_last, bf16 autocast, torch.compile, CUDA graphs through
compile's reduce-overhead mode, fused optimiser), and the usual LightlySSL pipeline (torchvision
ImageFolder + per-sample SimCLRTransform in DataLoader workers, fp32) for ``--peer-seconds``.
Every number is printed in one JSON object. Data: the shared cifar10-jpg.tar.gz, extracted to a
temporary folder (not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from common import emit, machine, shared_path

RECIPE = "cifar10-byol"
PHASES = ("data", "views", "backbone_forward", "head_and_loss", "backward", "optimizer")


def cifar_folder(data: str | None, scratch: Path, tiny: bool) -> Path:
    if data is not None:
        return Path(data)
    with tarfile.open(shared_path("cifar10-jpg.tar.gz")) as archive:
        members = archive.getmembers()
        if tiny:  # 40 training and 20 test images per class
            keep: dict[str, int] = {}
            chosen = []
            for member in members:
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 3:
                    key = f"{parts[-3]}/{parts[-2]}"
                    limit = 40 if parts[-3] == "train" else 20
                    if keep.get(key, 0) < limit:
                        keep[key] = keep.get(key, 0) + 1
                        chosen.append(member)
            members = chosen
        archive.extractall(scratch, members=members, filter="data")
    roots = [p for p in scratch.rglob("train") if p.is_dir()]
    return roots[0].parent if roots else scratch


@contextlib.contextmanager
def gpu_utilisation() -> Iterator[list[float]]:
    """Samples of the GPU's utilisation (%) once a second while inside (empty without
    nvidia-smi)."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5).stdout.split()
                if out:
                    samples.append(float(out[0]))
            except (OSError, subprocess.SubprocessError, ValueError):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=5)


def part_train(folder: Path, recipe: str, budget: float, device: str,
               **overrides: Any) -> dict[str, Any]:
    import json

    from rich.console import Console

    import contrastlab

    out = Path(tempfile.mkdtemp(prefix="bench-cifar-gpu-"))
    try:
        start = time.perf_counter()
        with gpu_utilisation() as utilisation:
            result = contrastlab.train(recipe=recipe, data=str(folder), time_budget=budget,
                                       device=device, out=str(out / "run"),
                                       console=Console(stderr=True), **overrides)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in
                   (out / "run" / "metrics.jsonl").read_text().splitlines()]
        rates = [r["images_per_s"] for r in records if r["type"] == "step"]
        m = result.metrics
        return {"knn_top1": m.get("knn_top1"), "linear_top1": m.get("linear_top1"),
                "train_seconds": m.get("train_seconds"), "steps": m.get("step"),
                "images_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
                "gpu_utilisation_mean": (round(sum(utilisation) / len(utilisation), 1)
                                         if utilisation else None),
                "wall_seconds": round(wall, 1)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def make_step(folder: Path, device: torch.device, *, resident: bool, channels_last: bool,
              bf16: bool, compile_mode: str | None, fused: bool, batch: int,
              breakdown: bool = False) -> Any:
    """One SimCLR training step of the ResNet-18 on real CIFAR images with the given levers;
    returns ``step() -> dict of phase seconds``."""
    from contrastlab.config import build_config
    from contrastlab.data import load_dataset
    from contrastlab.methods import build_method
    from contrastlab.runs import build_views
    from contrastlab.views import channel_stats

    images = load_dataset(str(folder)).train.images
    mean, std = channel_stats(images)
    config = build_config(None, {"backbone": "resnet18-cifar", "batch_size": batch})
    views = build_views(config, 32, 3, mean, std)
    method = build_method("simclr", "resnet18-cifar", 3, settings=config.method).to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if compile_mode is not None:
        method.backbone.compile(mode=compile_mode)
    options = {"fused": True} if fused and device.type == "cuda" else {}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, **options)
    source = images.to(device) if resident else (
        images.pin_memory() if device.type == "cuda" else images)
    generator = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def sync() -> None:
        if device.type == "cuda" and breakdown:
            torch.cuda.synchronize(device)

    def step() -> dict[str, float]:
        times: dict[str, float] = {}
        lap = time.perf_counter()

        def mark(name: str) -> None:
            nonlocal lap
            sync()
            now = time.perf_counter()
            times[name] = now - lap
            lap = now

        index = torch.randint(0, len(source), (batch,), generator=generator)
        batch_images = source[index.to(source.device)].to(device, non_blocking=True)
        mark("data")
        vs = [v.contiguous(memory_format=fmt) for v in views(batch_images, generator)]
        mark("views")
        with autocast:
            h = method.backbone(torch.cat(vs))
            mark("backbone_forward")
            z = method.projection_head(h)
            loss = method.loss_from_embeddings(z.unflatten(0, (2, -1)).transpose(0, 1),
                                               None).loss
            mark("head_and_loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark("backward")
        optimizer.step()
        mark("optimizer")
        return times

    return step


def images_per_second(step: Any, batch: int, seconds: float, device: torch.device) -> float:
    for _ in range(3):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * count / (time.perf_counter() - start)


def peer_images_per_second(folder: Path, device: torch.device, seconds: float, batch: int,
                           workers: int) -> float:
    """LightlySSL's SimCLR pipeline as its CIFAR-10 benchmark writes it (fp32, eager)."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    from contrastlab.models import build_backbone

    dataset = torchvision.datasets.ImageFolder(
        str(folder / "train"), transform=SimCLRTransform(input_size=32, gaussian_blur=0.0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    backbone = build_backbone("resnet18-cifar", 3)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(512, 512, 128)).to(device)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * batch / 128, momentum=0.9,
                                weight_decay=5e-4)
    start, images, warm = time.perf_counter(), 0, True
    while True:
        for (x0, x1), _ in loader:
            loss = criterion(model(x0.to(device)), model(x1.to(device)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if warm:  # the first batch starts the workers: not counted
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start, warm = time.perf_counter(), False
                continue
            images += len(x0)
            if time.perf_counter() - start >= seconds:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return images / (time.perf_counter() - start)


LEVERS = {  # name: (resident, channels_last, bf16, compile mode, fused optimiser)
    "baseline (CPU-resident data, NCHW, fp32, eager)": (False, False, False, None, False),
    "+ data resident on the GPU": (True, False, False, None, False),
    "+ channels_last": (True, True, False, None, False),
    "+ bf16 autocast": (True, True, True, None, False),
    "+ torch.compile": (True, True, True, "default", False),
    "+ fused optimiser": (True, True, True, "default", True),
    "+ CUDA graphs (compile reduce-overhead)": (True, True, True, "reduce-overhead", True),
}


def part_levers(folder: Path, device: torch.device, batch: int, seconds: float,
                peer_seconds: float, peer_workers: int) -> dict[str, Any]:
    result: dict[str, Any] = {"levers_images_per_s": {}}
    on_gpu = device.type == "cuda"
    for name, (resident, last, bf16, mode, fused) in LEVERS.items():
        if mode is not None and not on_gpu and "reduce-overhead" in str(mode):
            continue  # CUDA graphs need a GPU
        step = make_step(folder, device, resident=resident, channels_last=last, bf16=bf16,
                         compile_mode=mode, fused=fused, batch=batch)
        result["levers_images_per_s"][name] = round(images_per_second(step, batch, seconds,
                                                                      device), 1)
    step = make_step(folder, device, resident=True, channels_last=True, bf16=on_gpu,
                     compile_mode=None, fused=on_gpu, batch=batch, breakdown=True)
    for _ in range(3):
        step()
    totals = dict.fromkeys(PHASES, 0.0)
    for _ in range(10):
        for phase, spent in step().items():
            totals[phase] += spent
    result["step_breakdown_ms"] = {p: round(1e3 * t / 10, 2) for p, t in totals.items()}
    best = max(result["levers_images_per_s"].values())
    peer = peer_images_per_second(folder, device, peer_seconds, 128, peer_workers)
    result["peer_images_per_s"] = round(peer, 1)
    result["best_over_peer"] = round(best / peer, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("train", "levers", "both"), default="both")
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--budget", type=float, default=480.0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--batch", type=int, default=512, help="batch of the lever timings")
    parser.add_argument("--lever-seconds", type=float, default=10.0)
    parser.add_argument("--peer-seconds", type=float, default=60.0)
    parser.add_argument("--peer-workers", type=int, default=8)
    parser.add_argument("--tiny", action="store_true",
                        help="a CPU smoke run: 400 images, seconds instead of minutes")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.budget, args.batch, args.lever_seconds, args.peer_seconds = 3.0, 32, 0.5, 2.0
        args.peer_workers = 0
    scratch = Path(tempfile.mkdtemp(prefix="bench-cifar-gpu-data-"))
    try:
        folder = cifar_folder(args.data, scratch, args.tiny)
        result: dict[str, Any] = {"benchmark": "cifar10_gpu", "device": str(device),
                                  "recipe": args.recipe, "tiny": args.tiny,
                                  "machine": machine()}
        if args.part in ("train", "both"):
            # the tiny folder's 400 training images hold fewer than the recipe's batch
            overrides = {"batch_size": 32} if args.tiny else {}
            result["train"] = part_train(folder, args.recipe, args.budget, str(device),
                                         **overrides)
        if args.part in ("levers", "both"):
            result["levers"] = part_levers(folder, device, args.batch, args.lever_seconds,
                                           args.peer_seconds, args.peer_workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
