"""Decoded + resized samples per second: contrastlab's shard stream against torchvision's
``ImageFolder`` + ``DataLoader``, with the same workers and the same output.

The script makes its own data and deletes it afterwards: ``--images`` CIFAR-10 training JPEGs
(``--source``, class folders) upscaled with seeded sizes (shorter side ``--side``, the longer
side up to 1.33x, bicubic) and re-encoded as JPEG quality 90 into a temporary folder of class
folders; then ``contrastlab.data.shard_build.build_shards`` writes them as shards: the same
JPEG bytes by default, or with ``--max-side M`` re-encoded at a shorter side of M (what
``contrastlab shards build --max-side`` does; torchvision still reads the original JPEGs, so
that variant measures decoding once at a working size, and reports the build's time).

* ours: :class:`contrastlab.data.stream.EpochStream` over the shards (seeded shard order and
  shuffle buffer), batches of ``--batch`` decoded in ``--workers`` worker processes at
  ``--size`` (a JPEG decoded at reduced scale where that is enough, shorter side resized,
  centre crop), uint8 (N, 3, S, S);
* torchvision: ``ImageFolder`` over the JPEG folders with ``Resize(S)``, ``CenterCrop(S)``,
  ``PILToTensor()``, ``DataLoader(batch_size, shuffle=True, num_workers)``: the same uint8
  (N, 3, S, S) batches.

Each pipeline runs ``--repeats`` whole epochs, alternating (ours, torchvision, ours, ...); the
clock of an epoch starts when its iterator is created (worker start-up included) and stops at
its last batch. samples/s/core = samples / seconds / workers (with 0 workers: / 1). The ratio is
ours / torchvision.

    python bench/shards.py [--images 20000] [--workers 2] [--size 224] [--side 256]
        [--batch 64] [--max-side M] [--repeats 3] [--tmp /tmp] [--markdown]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit, machine
from PIL import Image

from contrastlab.data.shard_build import build_shards
from contrastlab.data.shard_set import catalog_shards, find_shard_sets
from contrastlab.data.stream import EpochStream, iterate_batches
from contrastlab.data.stream_order import epoch_order


def make_jpegs(source: Path, out: Path, images: int, side: int, seed: int) -> int:
    """Write ``images`` upscaled JPEGs (class folders) from the CIFAR-10 folders in ``source``."""
    files = sorted(source.glob("*/*.jpg"))
    if not files:
        sys.exit(f"no CIFAR-10 JPEG class folders found in {source} (pass --source)")
    rng = random.Random(seed)
    chosen = rng.sample(files, min(images, len(files)))
    for number, path in enumerate(chosen):
        longer = int(side * rng.uniform(1.0, 4 / 3))
        size = (longer, side) if rng.random() < 0.5 else (side, longer)
        folder = out / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
                folder / f"{number:07d}.jpg", format="JPEG", quality=90)
    return len(chosen)


def run_ours(shard_folder: Path, workers: int, size: int, batch: int, epoch: int) -> int:
    train, _ = find_shard_sets(str(shard_folder))
    catalog = catalog_shards(train)
    steps = len(catalog) // batch
    order = epoch_order(catalog.counts, seed=0, epoch=epoch, rank=0, world=1, buffer=10_000,
                        length=steps * batch)
    stream = EpochStream(catalog, order, local_batch=batch, start=0, steps=steps,
                         image_size=size, channels=3, skip_bad_files=False)
    samples = 0
    for images, _, _ in iterate_batches(stream, workers):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, size, size)
        samples += images.shape[0]
    return samples


def run_torchvision(folder: Path, workers: int, size: int, batch: int) -> int:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                    transforms.PILToTensor()])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True)
    samples = 0
    for images, _ in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, size, size)
        samples += images.shape[0]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/cifar10/train"))
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=None,
                        help="re-encode the shards' images at this shorter side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None, help="where the data is made")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    work = Path(tempfile.mkdtemp(prefix="contrastlab-bench-shards-", dir=args.tmp))
    try:
        folder, shards = work / "jpegs", work / "shards"
        start = time.perf_counter()
        count = make_jpegs(args.source, folder, args.images, args.side, seed=0)
        made = time.perf_counter() - start
        start = time.perf_counter()
        build_shards(str(folder), shards, shard_bytes=64 * 2**20, max_side=args.max_side)
        built = time.perf_counter() - start
        seconds: dict[str, list[float]] = {"ours": [], "torchvision": []}
        samples: dict[str, int] = {}
        for repeat in range(args.repeats):
            for name in ("ours", "torchvision"):
                start = time.perf_counter()
                if name == "ours":
                    samples[name] = run_ours(shards, args.workers, args.size, args.batch, repeat)
                else:
                    samples[name] = run_torchvision(folder, args.workers, args.size, args.batch)
                seconds[name].append(time.perf_counter() - start)
        cores = max(1, args.workers)
        rate = {name: samples[name] * args.repeats / sum(seconds[name]) for name in seconds}
        result = {
            "benchmark": "shards", "images": count, "side": args.side, "size": args.size,
            "batch": args.batch, "workers": args.workers, "repeats": args.repeats,
            "shard_max_side": args.max_side,
            "make_jpegs_s": round(made, 2), "build_shards_s": round(built, 2),
            "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
            "samples_per_s_per_core": {k: round(v / cores, 1) for k, v in rate.items()},
            "epoch_seconds": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
            "ratio_ours_over_torchvision": round(rate["ours"] / rate["torchvision"], 3),
            "machine": machine(),
        }
        row = (f"| shards vs ImageFolder | {count} JPEGs {args.side}px -> {args.size}px, "
               f"{args.workers} workers | {rate['ours'] / cores:.0f} | "
               f"{rate['torchvision'] / cores:.0f} | {result['ratio_ours_over_torchvision']}x |")
        emit(result, row if args.markdown else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
