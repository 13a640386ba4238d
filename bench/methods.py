"""Every method on one benchmark at an equal wall-time budget (or an equal number of epochs):
linear probe and kNN accuracy, images/s and peak resident memory, one fresh process per run.

    python bench/methods.py --data mnist --budget 300 [--methods simclr,byol,...] [--markdown]
    python bench/methods.py --data fashion-mnist --budget 900 --markdown
    python bench/methods.py --data mnist --budget 300 --parallel 2 --threads 1  # a core each
    python bench/methods.py --data fashion-mnist --epochs 17 --device cuda --precision bf16 \
        --methods supcon,supervised --seed 0,1,2,3,4 --parallel 10 [--set crop-scale=0.2,1]

``mnist`` is the seeded stratified 8,000 / 2,000 split of ../shared/data/mnist-test;
``fashion-mnist`` is the official 60,000 / 10,000 split of the Debian package. Every method trains
with the same backbone (the small ConvNet; ``vit-tiny`` for MAE), batch, optimiser and views (per
data set, ``VIEWS``); only the method's own hyper-parameters differ, listed in ``METHOD_SETTINGS``.
``--compile`` compiles every backbone (``contrastlab train --compile``).
Raw-pixel baselines are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import emit, machine, shared_path

COMMON = {
    "backbone": "convnet-small-x256", "batch-size": "128", "optimizer": "adamw", "lr": "3e-3",
    "weight-decay": "1e-4", "warmup-fraction": "0.05",
}

#: The views of each benchmark: digits are upright and not mirror-symmetric (small rotations, no
#: flips: the MNIST recipe of bench/mnist_simclr.py); clothes are upright and left-right symmetric
#: (flips, no rotation). Other data gets the Fashion-MNIST views.
VIEWS: dict[str, dict[str, str]] = {
    "mnist": {"crop-scale": "0.5,1", "rotation": "10", "flip-p": "0"},
    "fashion-mnist": {"crop-scale": "0.5,1", "rotation": "0", "flip-p": "0.5"},
}

#: The backbone of each benchmark (``--backbone`` overrides it): the small ConvNet for the 8,000
#: digits, twice its width for the 60,000 clothes (in 300 s screens on Fashion-MNIST it reached
#: SimCLR's linear accuracy in a third of the steps; docs/benchmarks.md).
BACKBONES = {"mnist": "convnet-small-x256", "fashion-mnist": "convnet-x256"}

#: Per-method settings on top of COMMON (small projectors: the 28x28 benchmark and a CPU budget).
METHOD_SETTINGS: dict[str, dict[str, str]] = {
    "simclr": {"temperature": "2.0", "projection-dim": "128", "projection-hidden-dim": "512"},
    "moco-v2": {"queue-size": "4096", "ema-momentum": "0.99"},
    "moco-v3": {"ema-momentum": "0.99"},
    "byol": {"ema-momentum": "0.99"},
    "simsiam": {},
    "nnclr": {"queue-size": "4096"},
    # 12-14 px local crops hurt the small ConvNet on 28 px digits (docs/benchmarks.md, SwAV/DINO
    # section): the MNIST table uses two global views for both.
    "swav": {"num-local-crops": "0", "num-prototypes": "100"},
    "dino": {"num-local-crops": "0", "num-prototypes": "1024", "ema-momentum": "0.99"},
    "barlow-twins": {},
    "vicreg": {},
    "supcon": {"temperature": "0.1"},
    "dcl": {"temperature": "0.2"},
    "dclw": {"temperature": "0.2"},
    "triplet": {"mining": "semi-hard"},
    "npair": {},
    "rotnet": {},
    "mae": {"backbone": "vit-tiny", "patch-size": "4", "jitter-p": "0", "grey-p": "0",
            "blur-p": "0"},
    "clip": {},
    "siglip": {},
    "supervised": {},
}

#: Per-benchmark changes to METHOD_SETTINGS: NT-Xent at T=0.5 on clothes (T=2.0 is the MNIST
#: recipe's; 0.5 gave 85.2% vs 84.7% linear, 82.0% vs 80.9% kNN in 300 s screens). SupCon with
#: one view per image on clothes: the labels give the positives and the 900 s budget covers
#: three times the epochs of two views (93.01% against 92.24% linear), at T=0.2 (93.30% against
#: 93.01% at T=0.1 and 92.88% at T=0.5; docs/benchmarks.md).
DATA_METHOD_SETTINGS: dict[str, dict[str, dict[str, str]]] = {
    "fashion-mnist": {"simclr": {"temperature": "0.5"},
                      "supcon": {"num-views": "1", "temperature": "0.2"}},
}

RAW_PIXELS = {"mnist": {"knn": 0.964, "linear": 0.903},
              "fashion-mnist": {"knn": 0.841, "linear": 0.833}}


def data_spec(name: str) -> str:
    if name == "mnist":
        return str(shared_path("mnist-test"))
    if name == "fashion-mnist":
        return "fashion-mnist"
    return name


def settings_for(method: str, data: str) -> dict[str, str]:
    """The command-line settings of ``method`` on benchmark ``data``: COMMON, the benchmark's
    backbone and VIEWS, then the method's own (METHOD_SETTINGS, DATA_METHOD_SETTINGS)."""
    return {**COMMON, "backbone": BACKBONES.get(data, COMMON["backbone"]),
            **VIEWS.get(data, VIEWS["fashion-mnist"]), **METHOD_SETTINGS.get(method, {}),
            **DATA_METHOD_SETTINGS.get(data, {}).get(method, {})}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["crop-scale=0.2,1", "lr=1e-2"]`` -> ``{"crop-scale": "0.2,1", "lr": "1e-2"}``."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. --set crop-scale=0.2,1")
        overrides[key.removeprefix("--")] = value
    return overrides


def train_command(method: str, data: str, out: Path, *, budget: float | None = None,
                  epochs: int | None = None, device: str = "cpu", seed: int = 0,
                  compile_backbone: bool = False, precision: str = "auto",
                  backbone: str | None = None, overrides: dict[str, str] | None = None,
                  data_path: str | None = None) -> list[str]:
    """The ``contrastlab train`` command line of one benchmark row.

    Exactly one of ``budget`` (seconds, ``--time-budget``) and ``epochs`` (a fixed number of
    epochs: equal work on any machine, for sweeps on a GPU) is given. ``overrides`` replace the
    benchmark's settings (``--set KEY=VALUE``); ``data_path`` reads the benchmark's data from
    another place (a copy of the Fashion-MNIST IDX folder on a machine without the package)."""
    if (budget is None) == (epochs is None):
        raise ValueError("give exactly one of budget and epochs")
    settings = settings_for(method, data)
    if backbone is not None and "backbone" not in METHOD_SETTINGS.get(method, {}):
        settings["backbone"] = backbone
    settings["precision"] = precision
    settings.update(overrides or {})
    length = (["--time-budget", str(budget)] if budget is not None
              else ["--epochs", str(epochs)])
    command = [sys.executable, "-m", "contrastlab", "train", "--method", method,
               "--data", data_path or data_spec(data), *length, "--device", device,
               "--seed", str(seed), "--out", str(out)]
    for key, value in settings.items():
        command += [f"--{key}", value]
    if compile_backbone:
        command.append("--compile")
    return command


def run_method(method: str, data: str, budget: float | None, device: str, seed: int,
               threads: int | None = None, compile_backbone: bool = False,
               precision: str = "auto", backbone: str | None = None, *,
               epochs: int | None = None, overrides: dict[str, str] | None = None,
               data_path: str | None = None) -> dict[str, Any]:
    """Train one method in a fresh process; return its final metrics, throughput and peak RSS.

    ``threads``: OMP_NUM_THREADS of the process (None: torch's default, all cores).
    ``backbone``: replaces COMMON's backbone for every method that does not set its own (MAE).
    ``epochs`` (with ``budget=None``), ``overrides``, ``data_path``: see ``train_command``."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-{method}-")) / "run"
    command = train_command(method, data, out, budget=budget, epochs=epochs, device=device,
                            seed=seed, compile_backbone=compile_backbone, precision=precision,
                            backbone=backbone, overrides=overrides, data_path=data_path)
    start = time.perf_counter()
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # output to a file, not a pipe: a long run's progress lines would fill a pipe nobody reads
    log_path = out.parent / "train.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = log_path.read_text(errors="replace")
    row: dict[str, Any] = {"method": method, "run": str(out), "wall_seconds": round(wall, 1),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    if os.waitstatus_to_exitcode(status) != 0:
        # the last lines with words in them (typer frames its errors in box-drawing characters)
        words = [line.strip(" │╭╮╰╯─") for line in stderr.splitlines()]
        row["error"] = " ".join(w for w in words if w)[-300:] or "(no output)"
        return row
    final = json.loads((out / "final_metrics.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if r["type"] == "step"][1:]
    row.update({
        "linear_top1": final.get("linear_top1"), "knn_top1": final.get("knn_top1"),
        "epochs": final.get("epoch"), "steps": final.get("step"),
        "images_per_s": round(sorted(rates)[len(rates) // 2], 1) if rates else None,
        "skipped_steps": final.get("skipped_steps", 0),
    })
    return row


def markdown(rows: list[dict[str, Any]], data: str, budget: float | None) -> str:
    length = f"steps in {budget:.0f} s" if budget is not None else "steps"
    lines = [f"| method | linear top-1 | kNN top-1 (k=200) | images/s | peak RSS (MiB) | "
             f"{length} |", "|---|---|---|---|---|---|"]
    raw = RAW_PIXELS.get(data)
    if raw:
        lines.append(f"| raw pixels | {100 * raw['linear']:.1f}% | {100 * raw['knn']:.1f}% | - | - "
                     "| - |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} | | | {r['peak_rss_mib']} | |")
            continue
        lines.append(f"| {r['label']} | {100 * r['linear_top1']:.2f}% | "
                     f"{100 * r['knn_top1']:.2f}% | {r['images_per_s']} | {r['peak_rss_mib']} | "
                     f"{r['steps']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="mnist", help="mnist, fashion-mnist or any --data spec")
    parser.add_argument("--data-path", default=None,
                        help="read the benchmark's data from here (e.g. a copy of the "
                             "Fashion-MNIST IDX folder on a machine without the Debian package)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--budget", type=float, default=None,
                        help="seconds per method (default 300)")
    length.add_argument("--epochs", type=int, default=None,
                        help="a fixed number of epochs instead of a time budget (equal work on "
                             "any machine: sweeps on a GPU)")
    parser.add_argument("--methods", default=",".join(METHOD_SETTINGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", default="0",
                        help="seed, or seeds separated by commas (one row per method and seed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="replace one training setting of every method, e.g. --set "
                             "crop-scale=0.2,1 (repeatable)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs trained at the same time (e.g. 2 with --threads 1: one "
                             "core each on a 2-core machine)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP threads per training process (default: torch's, all cores)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every method's backbone (contrastlab train --compile)")
    parser.add_argument("--precision", default="auto",
                        help="contrastlab train --precision: auto (fp32 on CPU), fp32, bf16 "
                             "(autocast; 1.7x on a CPU with AVX512-BF16, docs/benchmarks.md)")
    parser.add_argument("--backbone", default=None,
                        help=f"backbone of every method but MAE (default per benchmark: "
                             f"{BACKBONES})")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    budget = args.budget if args.budget is not None or args.epochs is not None else 300.0
    methods = [m for m in args.methods.split(",") if m]
    try:
        seeds = [int(s) for s in args.seed.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seed {args.seed!r}: expected integers separated by commas") from None
    overrides = parse_overrides(args.overrides)
    jobs = [(method, seed) for method in methods for seed in seeds]

    def one(job: tuple[str, int]) -> dict[str, Any]:
        method, seed = job
        row = run_method(method, args.data, budget, args.device, seed, args.threads,
                         args.compile, args.precision, args.backbone, epochs=args.epochs,
                         overrides=overrides, data_path=args.data_path)
        row["seed"] = seed
        row["label"] = method if len(seeds) == 1 else f"{method} (seed {seed})"
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        rows = list(pool.map(one, jobs))
    emit({"benchmark": "methods", "data": args.data, "budget_s": budget, "epochs": args.epochs,
          "seeds": seeds, "overrides": overrides, "rows": rows,
          "parallel": args.parallel, "threads": args.threads, "compile": args.compile,
          "precision": args.precision,
          "backbone": args.backbone or BACKBONES.get(args.data, COMMON["backbone"]),
          "views": VIEWS.get(args.data, VIEWS["fashion-mnist"]),
          "raw_pixels": RAW_PIXELS.get(args.data), "machine": machine()},
         markdown(rows, args.data, budget) if args.markdown else None)


if __name__ == "__main__":
    main()
