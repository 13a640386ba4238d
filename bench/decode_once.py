"""Decode once: how long a command on an image folder takes with the decoded-image cache off,
on its first use (cold: decoding and keeping) and after it (warm).

The script trains a short run on ``--data`` (default the CIFAR-10 JPEG folders, 60,000 images)
with the cache off, then times ``contrastlab eval knn --run RUN`` three times: cache off (every
image decoded, as before the cache), cache on but empty (decoded once and kept), and cache on
and filled (mapped from disk). Then ``contrastlab embed`` once more with the filled cache. Each
time is the whole command's wall time, Python's start-up included. The cache lives in a
temporary folder deleted at the end.

    python bench/decode_once.py [--data /tmp/cifar10] [--recipe cifar10-convnet-cpu]
        [--tmp /tmp] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine


def timed(command: list[str], cache: str) -> float:
    env = {**os.environ, "CONTRASTLAB_CACHE_DIR": cache}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "contrastlab", *command], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"contrastlab {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/tmp/cifar10")
    parser.add_argument("--recipe", default="cifar10-convnet-cpu")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contrastlab-bench-decode-once-", dir=args.tmp))
    try:
        run, cache = work / "run", str(work / "cache")
        seconds = {"train_10s_cache_off": timed(
            ["train", "--recipe", args.recipe, "--data", args.data, "--time-budget", "10",
             "--no-eval-at-end", "--out", str(run)], "off")}
        knn = ["eval", "knn", "--run", str(run)]
        seconds["eval_knn_cache_off"] = timed(knn, "off")
        seconds["eval_knn_cold"] = timed(knn, cache)
        seconds["eval_knn_warm"] = timed(knn, cache)
        seconds["embed_warm"] = timed(["embed", "--run", str(run), "--out",
                                       str(work / "embeddings.npy")], cache)
        size = sum(path.stat().st_size for path in Path(cache).rglob("*") if path.is_file())
        result = {"benchmark": "decode_once", "data": args.data, "seconds": seconds,
                  "cache_mib": round(size / 2**20, 1), "machine": machine()}
        off, cold, warm = (seconds[f"eval_knn_{name}"] for name in ("cache_off", "cold", "warm"))
        row = (f"| decode once, `eval knn` on {args.data} | cache off {off} s, first use {cold} s,"
               f" then {warm} s (`embed` {seconds['embed_warm']} s) | {result['cache_mib']} MiB |")
        emit(result, row if args.markdown else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
