"""Throughput of batched ``AugmentedViews`` against per-sample torchvision v2 in a DataLoader.

Ours: ``contrastlab.views.AugmentedViews`` on batches of ``--batch-size`` uint8 images in the main
process, on ``--device`` (CPU: torch's default number of threads).
Baseline: the equivalent torchvision.transforms.v2 pipeline applied per sample (two views per
image) in a ``DataLoader`` with ``--workers`` worker processes and the same batch size:
RandomResizedCrop(32, scale=(0.08, 1), antialias=True), RandomHorizontalFlip,
RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(0.2),
ToDtype(float32, scale=True), Normalize.

Images: the first ``--images`` CIFAR-10 training images decoded from
``<repo>/../shared/data/cifar10-jpg.tar.gz``, or random uint8 images if that file is absent.
Both pipelines run one warm-up pass, then ``--passes`` timed passes over all images.

Prints exactly one JSON object on stdout; with ``--markdown`` also a table row (for
docs/benchmarks.md) on stderr.

    python bench/views_throughput.py [--device cpu|cuda] [--images N] [--markdown]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from contrastlab.views import AugmentedViews

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SIZE = 32
ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


def log(message: str) -> None:
    """Progress and notes go to stderr so stdout holds only the JSON result."""
    print(message, file=sys.stderr, flush=True)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where available."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_images(count: int) -> tuple[Tensor, str]:
    """The first ``count`` training images of the CIFAR-10 archive as uint8 (N, 3, 32, 32)."""
    if not ARCHIVE.is_file():
        log(f"note: {ARCHIVE} not found; using {count} random uint8 images instead")
        gen = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen), (
            "random"
        )
    arrays: list[np.ndarray] = []
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar:
            if len(arrays) >= count:
                break
            name = member.name.lower()
            if not member.isfile() or not name.startswith("train/"):
                continue
            if not name.endswith((".jpg", ".jpeg", ".png")):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            with Image.open(io.BytesIO(handle.read())) as img:
                arr = np.asarray(img.convert("RGB").resize((SIZE, SIZE)), dtype=np.uint8)
            arrays.append(arr)
    if not arrays:
        raise SystemExit(f"no training images found in {ARCHIVE}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, "cifar10-jpg"


class TwoViewDataset(Dataset):
    """Per-sample baseline: every item is two independently transformed views of one image."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(SIZE, scale=(0.08, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        img = self.images[index]
        return self.transform(img), self.transform(img)


def bench_ours(images: Tensor, batch_size: int, passes: int, device: torch.device) -> float:
    """Views per second of AugmentedViews over ``passes`` shuffled passes (after one warm-up)."""
    views = AugmentedViews(SIZE, 3, CIFAR_MEAN, CIFAR_STD)
    data = images.to(device)
    gen = torch.Generator().manual_seed(0)
    n = data.shape[0]

    def one_pass() -> int:
        order = torch.randperm(n, generator=gen).to(device)
        produced = 0
        for start in range(0, n, batch_size):
            out = views(data[order[start : start + batch_size]], gen)
            produced += sum(v.shape[0] for v in out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return produced

    one_pass()
    t0 = time.perf_counter()
    produced = sum(one_pass() for _ in range(passes))
    return produced / (time.perf_counter() - t0)


def bench_torchvision(images: Tensor, batch_size: int, passes: int, workers: int) -> float:
    """Views per second of the per-sample torchvision pipeline in a DataLoader."""
    loader = DataLoader(
        TwoViewDataset(images),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )

    def one_pass() -> int:
        return sum(a.shape[0] + b.shape[0] for a, b in loader)

    one_pass()  # warm-up, includes starting the workers
    t0 = time.perf_counter()
    produced = sum(one_pass() for _ in range(passes))
    return produced / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device for AugmentedViews (cpu or cuda)")
    parser.add_argument("--images", type=int, default=10_000, help="number of images")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (baseline)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the images")
    parser.add_argument("--markdown", action="store_true", help="also print a table row")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")

    images, source = load_images(args.images)
    log(f"{images.shape[0]} images ({source}); timing contrastlab on {device}")
    ours = bench_ours(images, args.batch_size, args.passes, device)
    log(f"contrastlab: {ours:,.0f} views/s; timing torchvision ({args.workers} workers)")
    theirs = bench_torchvision(images, args.batch_size, args.passes, args.workers)
    log(f"torchvision: {theirs:,.0f} views/s")

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    result = {
        "ours_views_per_s": round(ours, 1),
        "torchvision_views_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 2),
        "image_size": SIZE,
        "batch_size": args.batch_size,
        "views_per_image": 2,
        "workers": args.workers,
        "images": int(images.shape[0]),
        "data": source,
        "passes": args.passes,
        "device": str(device),
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }
    print(json.dumps(result))
    if args.markdown:
        print(
            f"| AugmentedViews vs torchvision v2 | {device} ({result['threads']} threads) | "
            f"{SIZE}x{SIZE} | {args.batch_size} | {args.workers} | {ours:,.0f} | {theirs:,.0f} | "
            f"{result['ratio']:.2f}x | {torch.__version__} |",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
