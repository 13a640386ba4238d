"""Streaming at scale: peak memory and start-up of ``contrastlab train`` on a large shard set,
against a set ten times smaller.

The script makes its own data and deletes it afterwards (``--keep`` keeps it). A pool of
``--pool`` CIFAR-10 training JPEGs (``--source``, class folders) is upscaled with seeded sizes
(shorter side ``--side``, the longer side up to 1.33x, bicubic) and re-encoded as JPEG quality
90; then ``--images`` samples (the pool repeated under distinct keys, with their class labels)
are written as shards of ``--shard-size`` by the project's shard writer, which also writes each
shard's catalog file and ``shards.json``, as ``contrastlab shards build`` does. The pool only
saves the time of encoding a million JPEGs: memory and start-up depend on the number of
samples, shards and the working size, not on whether two samples hold the same bytes.

The small set is the first shards of the large one (a brace pattern), about ``--images / 10``
samples. For each set, and for the large set once more without catalog files (the tar headers
scanned as for shards made by another tool, the cache off), the script runs

    contrastlab train --data SET --image-size S --backbone B --batch-size N --time-budget T
        --loader-workers W --log-every 1 --diagnose-every 0 --no-eval-at-end

and reports: start-up, the seconds from starting the command to the end of the first
optimiser step (from the first step record's wall time in metrics.jsonl; Python and torch's
import included); the process tree's peak memory, sampled every 0.2 s from /proc as the sum of
RSS (which counts pages shared by the main process and its forked decoding workers once per
process) and the sum of PSS (shared pages divided among the processes that share them: what the
tree costs the machine), and the training process's own peak RSS; and the steady images/s and
data-wait share of the last step records.

    python bench/shards_scale.py [--images 1000000] [--pool 5000] [--side 256]
        [--shard-size 256MB] [--size 128] [--backbone resnet18] [--batch 64]
        [--time-budget 60] [--workers 2] [--tmp /tmp] [--keep] [--shards DIR] [--large-only]
        [--markdown]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import emit, machine
from PIL import Image

from contrastlab.atomic import write_text_atomic
from contrastlab.data.shard_catalog_file import CATALOG_SUFFIX
from contrastlab.data.shard_format import INDEX_NAME, ShardIndex, read_index
from contrastlab.data.shard_writer import ShardSample, parse_size, write_shards
from contrastlab.phases import phase


def make_pool(source: Path, pool: int, side: int, seed: int) -> tuple[list[bytes], list[int],
                                                                      list[str]]:
    """``pool`` upscaled JPEGs (bytes), their labels and the class names."""
    classes = sorted(path.name for path in source.iterdir() if path.is_dir())
    files = sorted(source.glob("*/*.jpg"))
    if not files:
        sys.exit(f"no CIFAR-10 JPEG class folders found in {source} (pass --source)")
    rng = random.Random(seed)
    images, labels = [], []
    for path in rng.sample(files, min(pool, len(files))):
        longer = int(side * rng.uniform(1.0, 4 / 3))
        size = (longer, side) if rng.random() < 0.5 else (side, longer)
        out = io.BytesIO()
        with Image.open(path) as img:
            img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
                out, format="JPEG", quality=90)
        images.append(out.getvalue())
        labels.append(classes.index(path.parent.name))
    return images, labels, classes


def write_set(folder: Path, images: list[bytes], labels: list[int], classes: list[str],
              count: int, shard_bytes: int) -> dict[str, int]:
    """Write ``count`` samples cycling through the pool as shards (+ index) into ``folder``."""
    def samples():  # noqa: ANN202 (a generator)
        for number in range(count):
            yield ShardSample(key=f"{number:08d}", image=images[number % len(images)],
                              extension="jpg", label=labels[number % len(images)])

    with phase(f"writing {count:,} samples as shards", total=count) as progress:
        counts = write_shards(samples(), folder, shard_bytes, on_sample=progress.advance)
    write_text_atomic(folder / INDEX_NAME, ShardIndex(classes=classes, counts=counts).to_json(),
                      "shard index")
    return counts


def _tree(root: int) -> list[int]:
    """``root`` and its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes (0, 0 when it is gone)."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                parts = line.split()
                if parts and parts[0] in values:
                    values[parts[0]] = int(parts[1]) * 1024
    except OSError:
        return 0, 0
    return values["Rss:"], values["Pss:"]


class TreeSampler(threading.Thread):
    """Samples the memory of a process tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_main_rss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = _tree(self.pid)
            memory = [_memory(pid) for pid in pids]
            self.peak_rss = max(self.peak_rss, sum(rss for rss, _ in memory))
            self.peak_main_rss = max(self.peak_main_rss, memory[0][0] if memory else 0)
            self.peak_pss = max(self.peak_pss, sum(pss for _, pss in memory))
            self.peak_processes = max(self.peak_processes, len(pids))
            self.done.wait(self.every)


def train_once(spec: str, out: Path, args: argparse.Namespace, env: dict[str, str]
               ) -> dict[str, Any]:
    """Run ``contrastlab train`` on ``spec``; start-up, peak memory and speed."""
    command = [sys.executable, "-m", "contrastlab", "train", "--data", spec,
               "--image-size", str(args.size), "--backbone", args.backbone,
               "--batch-size", str(args.batch), "--time-budget", str(args.time_budget),
               "--loader-workers", str(args.workers), "--log-every", "1",
               "--diagnose-every", "0", "--no-eval-at-end", "--out", str(out), "--seed", "0"]
    start = time.time()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid)
    sampler.start()
    _, stderr = process.communicate()
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"training on {spec} failed ({process.returncode}):\n{stderr[-3000:]}")
    steps = [record for record in map(json.loads, (out / "metrics.jsonl").read_text()
                                      .splitlines()) if record.get("type") == "step"]
    steady = steps[len(steps) // 2:]
    return {
        "start_up_s": round(steps[0]["time"] - start, 2),
        "steps": len(steps),
        "peak_rss_gib": round(sampler.peak_rss / 2**30, 3),
        "peak_pss_gib": round(sampler.peak_pss / 2**30, 3),
        "peak_main_rss_gib": round(sampler.peak_main_rss / 2**30, 3),
        "processes": sampler.peak_processes,
        "images_per_s": round(sum(r["images_per_s"] for r in steady) / len(steady), 1),
        "data_wait": round(sum(r.get("data_wait", 0.0) for r in steady) / len(steady), 3),
    }


def _cumulative(counts: dict[str, int]) -> list[int]:
    total, out = 0, []
    for count in counts.values():
        total += count
        out.append(total)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/cifar10/train"))
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--shard-size", default="256MB")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-budget", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=None, help="where the data is made")
    parser.add_argument("--keep", action="store_true", help="keep the shard set")
    parser.add_argument("--large-only", action="store_true",
                        help="only the run on the whole set (speed, data wait, memory)")
    parser.add_argument("--shards", type=Path, default=None,
                        help="measure this shard set (kept by an earlier --keep) instead")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contrastlab-bench-scale-", dir=args.tmp))
    try:
        start = time.perf_counter()
        if args.shards is None:
            images, labels, classes = make_pool(args.source, args.pool, args.side, seed=0)
            shards = work / "shards"
            counts = write_set(shards, images, labels, classes, args.images,
                               parse_size(args.shard_size))
        else:  # a set an earlier run kept (--keep)
            shards = args.shards
            index = read_index(shards)
            if index is None:
                sys.exit(f"{shards} has no {INDEX_NAME}: pass a folder an earlier --keep left")
            counts = index.counts
            args.images = sum(counts.values())
        made = time.perf_counter() - start
        names = list(counts)
        small_shards = 1 + next((i for i, total in enumerate(_cumulative(counts))
                                 if total >= args.images // 10), len(names) - 1)
        total = sum(counts[name] for name in names[:small_shards])
        small = f"{shards}/{{{0:06d}..{small_shards - 1:06d}}}.tar"
        env = {**os.environ, "CONTRASTLAB_CACHE_DIR": "off"}
        runs = {"large": train_once(str(shards), work / "run-large", args, env)}
        if not args.large_only:
            runs["small"] = train_once(small, work / "run-small", args, env)
            hidden = work / "catalogs"
            hidden.mkdir()
            for path in shards.glob(f"*{CATALOG_SUFFIX}"):
                path.rename(hidden / path.name)
            try:
                runs["large_scanned"] = train_once(str(shards), work / "run-scan", args, env)
            finally:
                for path in hidden.iterdir():
                    path.rename(shards / path.name)
        result = {
            "benchmark": "shards_scale", "samples": {"small": total, "large": args.images},
            "shards": {"small": small_shards, "large": len(names)},
            "side": args.side, "size": args.size, "backbone": args.backbone,
            "batch": args.batch, "workers": args.workers, "time_budget": args.time_budget,
            "make_data_s": round(made, 1),
            "pool": args.pool, "data_gib": round(sum(p.stat().st_size
                                                     for p in shards.glob("*.tar")) / 2**30, 2),
            "runs": runs,
            "machine": machine(),
        }
        if args.large_only:
            large = runs["large"]
            emit(result, f"| {args.images:,} samples, {args.size}px {args.backbone} batch "
                 f"{args.batch}, {args.workers} workers | {large['images_per_s']} images/s, "
                 f"data wait {large['data_wait']:.1%} | peak PSS {large['peak_pss_gib']} GiB |"
                 if args.markdown else None)
            return
        result["pss_ratio_large_over_small"] = round(runs["large"]["peak_pss_gib"]
                                                     / runs["small"]["peak_pss_gib"], 3)
        row = (f"| {args.images:,} vs {total:,} samples, {args.size}px {args.backbone} batch "
               f"{args.batch}, {args.workers} workers | peak PSS {runs['large']['peak_pss_gib']}"
               f" vs {runs['small']['peak_pss_gib']} GiB (RSS sum "
               f"{runs['large']['peak_rss_gib']} vs {runs['small']['peak_rss_gib']}) | "
               f"start-up {runs['large']['start_up_s']} vs {runs['small']['start_up_s']} s "
               f"({runs['large_scanned']['start_up_s']} s scanning the headers) |")
        emit(result, row if args.markdown else None)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
