"""Collapse alarm: a deliberately collapsing run raises it, healthy runs do not.

Trains on `digits` (bundled, 1,437 training images) with diagnostics every 2 epochs and prints,
per run, the alarms the trainer logged (metrics.jsonl "alarm" records), the last diagnostics and
the final kNN accuracy, as one JSON object.

    python bench/collapse_alarm.py [--epochs 20] [--runs simclr,simsiam,simsiam-no-stop-gradient]
                                   [--keep DIR] [--markdown]

Runs:
* ``simclr``: SimCLR, the default recipe (healthy).
* ``simsiam``: SimSiam as published (predictor + stop-gradient).
* ``simsiam-no-stop-gradient``: SimSiam with the stop-gradient removed, a method variant defined
  here and registered for this process only; Chen & He (2021, Fig. 2) show it collapses.
* ``simclr-lr-1``: SimCLR with AdamW at lr 1.0 (a learning rate 1,000x too high).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import emit, machine
from rich.console import Console
from torch import Tensor

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.methods import METHODS, StepOutput
from contrastlab.methods.simsiam import SimSiam


class SimSiamWithoutStopGradient(SimSiam):
    """SimSiam whose loss back-propagates into the target projection too:
    L = -cos(p1, z2)/2 - cos(p2, z1)/2 with no detach (Chen & He 2021, sec. 4.1: collapses)."""

    name = "simsiam-no-stop-gradient"

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        n = views[0].shape[0]
        z = self.projection_head(self.backbone(torch.cat(views, dim=0)))
        p = self.prediction_head(z)
        loss = -0.5 * (F.cosine_similarity(p[:n], z[n:]).mean()
                       + F.cosine_similarity(p[n:], z[:n]).mean())
        return StepOutput(loss=loss)


RUNS: dict[str, dict[str, Any]] = {
    "simclr": {"method": "simclr"},
    "simsiam": {"method": "simsiam"},
    "simsiam-no-stop-gradient": {"method": "simsiam-no-stop-gradient"},
    "simclr-lr-1": {"method": "simclr", "lr": 1.0},
}
COMMON = {"data": "digits", "backbone": "convnet-small", "batch_size": 128, "knn_k": 20,
          "diagnose_every": 2, "seed": 0}


def records(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def summarise(diagnostics: dict[str, Any]) -> dict[str, Any]:
    keep = ("effective_rank", "effective_rank_ratio", "normalized_std_ratio", "negative_cosine")
    return {space: {k: round(diagnostics[space][k], 4) for k in keep
                    if diagnostics[space].get(k) is not None}
            for space in ("projector", "backbone")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--keep", type=Path, help="Keep the run directories here.")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    METHODS[SimSiamWithoutStopGradient.name] = SimSiamWithoutStopGradient
    root = args.keep or Path(tempfile.mkdtemp(prefix="collapse-"))
    results: dict[str, Any] = {}
    try:
        for name in args.runs.split(","):
            out = root / name
            config = build_config(None, {**COMMON, **RUNS[name], "epochs": args.epochs,
                                         "out": str(out)})
            start = time.perf_counter()
            final = train(config, console=Console(quiet=True)).metrics
            diagnosed = records(out, "diagnostics")
            results[name] = {
                "alarms": [{"epoch": a["epoch"], "kind": a["kind"], "space": a["space"],
                            "message": a["message"]} for a in records(out, "alarm")],
                "diagnosed_epochs": [d["epoch"] for d in diagnosed],
                "last_diagnostics": summarise(diagnosed[-1]) if diagnosed else None,
                "knn_top1": final.get("knn_top1"),
                "seconds": round(time.perf_counter() - start, 1),
            }
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = "\n".join(
        f"| {name} | {r['knn_top1'] * 100 if r['knn_top1'] is not None else float('nan'):.1f}% | "
        + (f"{r['alarms'][0]['kind']} collapse ({r['alarms'][0]['space']}), epoch "
           f"{r['alarms'][0]['epoch']}" if r["alarms"] else "none") + " |"
        for name, r in results.items())
    emit({"benchmark": "collapse_alarm", "epochs": args.epochs, **COMMON, "runs": results,
          "machine": machine()}, rows if args.markdown else None)


if __name__ == "__main__":
    main()
