"""Quality from shards against quality from memory: the same recipe, seed and epochs on CIFAR-10
read into memory and streamed from tar shards.

The script builds shards of ``--data`` (``contrastlab shards build``, the original JPEG bytes,
train/ and test/ shard folders) into a temporary folder, then trains the recipe (``--recipe``,
default ``cifar10-convnet-cpu``) for ``--epochs`` epochs (``--time-budget 0``: the epochs decide,
so the machine's load does not change the result) on

* the data in memory with seeds 0 .. ``--seeds``-1: the spread between seeds is the noise;
* the shards (``--stream on``) with seed 0.

Each run ends with the standard evaluation (kNN k=200 and linear probe on the official test
split; the streamed run reads the shards for it in one streamed pass). A streamed epoch sees the
same images as an epoch in memory but in another order (shards shuffled, then a shuffle buffer of
10,000 samples), so the runs are not bit-identical: the question is whether the difference is
within the noise between seeds.

    python bench/shards_quality.py [--data /tmp/cifar10] [--epochs 2] [--seeds 2]
        [--recipe cifar10-convnet-cpu] [--tmp /tmp] [--markdown]

``shards build`` writes the samples shuffled (seed 0); before it did, the shards held CIFAR-10
class by class, and the streamed run lost about 3 kNN points (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit, machine


def train(data: str, out: Path, args: argparse.Namespace, seed: int, stream: str
          ) -> dict[str, Any]:
    command = [sys.executable, "-m", "contrastlab", "train", "--recipe", args.recipe,
               "--data", data, "--time-budget", "0", "--epochs", str(args.epochs),
               "--seed", str(seed), "--stream", stream, "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in reversed(records) if r.get("type") == "final")
    return {"seed": seed, "stream": stream, "knn_top1": final["knn_top1"],
            "linear_top1": final["linear_top1"], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/tmp/cifar10")
    parser.add_argument("--recipe", default="cifar10-convnet-cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2,
                        help="runs from memory (seeds 0 ..); 0: only the run from shards")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contrastlab-bench-quality-", dir=args.tmp))
    try:
        shards = work / "shards"
        subprocess.run([sys.executable, "-m", "contrastlab", "shards", "build", "--data",
                        args.data, "--out", str(shards), "--shard-size", "64MB"], check=True,
                       capture_output=True)
        memory = [train(args.data, work / f"memory-{seed}", args, seed, "off")
                  for seed in range(args.seeds)]
        streamed = train(str(shards), work / "shards-0", args, 0, "on")
        keys = ("knn_top1", "linear_top1")
        spread = {key: round(max(r[key] for r in memory) - min(r[key] for r in memory), 4)
                  if memory else None for key in keys}
        difference = {key: round(streamed[key] - memory[0][key], 4) if memory else None
                      for key in keys}
        result = {"benchmark": "shards_quality", "recipe": args.recipe, "epochs": args.epochs,
                  "memory": memory, "shards": streamed, "seed_spread": spread,
                  "shards_minus_memory_seed0": difference, "machine": machine()}
        row = (f"| {args.recipe}, {args.epochs} epochs | memory "
               + (", ".join(f"{r['knn_top1']:.2%} / {r['linear_top1']:.2%} (seed {r['seed']})"
                            for r in memory) or "not run")
               + f" | shards {streamed['knn_top1']:.2%} / {streamed['linear_top1']:.2%} (seed 0)"
               " |")
        emit(result, row if args.markdown else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
