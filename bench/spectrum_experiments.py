"""The two experiments of the reference recipe, on CIFAR-10 with the CPU recipe at equal budgets.

1. Temperature against spectrum: SimCLR at T = 0.03, the recipe's 0.2 and 0.5; for each, the
   linear probe and the top-5 eigenvalue ratio (share of the embedding covariance's variance in
   its 5 largest eigenvalues) of backbone features and projector outputs, with effective rank.
2. What keeps the spectrum healthy: the covariance spectrum (drawn as the report draws it) of
   SimCLR without its projection head (the loss on backbone features), SimSiam without its
   stop-gradient and MoCo v2 without its queue (negatives from the current batch only), each
   beside the intact method.

    python bench/spectrum_experiments.py --experiment temperature --epochs 3
    python bench/spectrum_experiments.py --experiment heuristics --epochs 2 --plots docs/images

Equal budgets are equal numbers of epochs (``--epochs``: the same steps whatever else the machine
is doing) or of seconds (``--budget``). Each run is ``contrastlab.train(recipe=RECIPE,
data=CIFAR, epochs=EPOCHS or time_budget=BUDGET, **changes)``; the
spectra come from ``contrastlab diagnose`` on the final checkpoint (2,000 training images, two
augmented views, the run's own augmentation). One JSON object is printed.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from common import emit, machine, shared_path
from rich.console import Console

RECIPE = "cifar10-convnet-cpu"

TEMPERATURE_RUNS: dict[str, dict[str, Any]] = {
    "T=0.03": {"temperature": 0.03},
    "T=0.2 (the recipe's)": {},
    "T=0.5": {"temperature": 0.5},
}

#: (experiment, ablation, intact); settings change the recipe (method first)
HEURISTIC_RUNS: dict[str, dict[str, Any]] = {
    "simclr": {"method": "simclr"},
    "simclr, no projection head": {"method": "simclr", "projection_layers": 0},
    "simsiam": {"method": "simsiam"},
    "simsiam, no stop-gradient": {"method": "simsiam", "stop_gradient": False},
    "moco-v2 (queue 4096)": {"method": "moco-v2", "queue_size": 4096, "temperature": 0.2},
    "moco-v2, no queue": {"method": "moco-v2", "queue_size": 0, "temperature": 0.2},
}


def cifar_folder(data: str | None, scratch: Path) -> Path:
    if data is not None:
        return Path(data)
    with tarfile.open(shared_path("cifar10-jpg.tar.gz")) as archive:
        archive.extractall(scratch, filter="data")
    return scratch


def settings_for(recipe: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The recipe's settings with ``changes``; a change to ``None`` removes a recipe key (a
    setting the other method does not have), and method settings of the recipe's method are
    dropped when the method changes."""
    from contrastlab.config import method_users

    method = changes.get("method", recipe.get("method", "simclr"))
    merged = {}
    for key, value in recipe.items():
        users = method_users().get(key)
        if users is not None and method not in users:
            continue  # a setting of the recipe's method only
        merged[key] = value
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def run_one(label: str, settings: dict[str, Any], folder: Path, length: dict[str, float],
            scratch: Path) -> dict[str, Any]:
    import contrastlab
    from contrastlab.eval.run_diagnostics import diagnose_run

    out = scratch / "".join(c if c.isalnum() or c in "-." else "_" for c in label)
    result = contrastlab.train(**{**settings, **length, "diagnose_every": 0}, data=str(folder),
                               out=str(out), console=Console(stderr=True))
    diagnosed = diagnose_run(out)
    row: dict[str, Any] = {"linear_top1": result.metrics.get("linear_top1"),
                           "knn_top1": result.metrics.get("knn_top1"),
                           "steps": result.global_step}
    for space in ("backbone", "projector"):
        values = diagnosed[space]
        row[space] = {"top5_eigenvalue_ratio": values.get("top5_eigenvalue_ratio"),
                      "effective_rank": values.get("effective_rank"),
                      "dim": values.get("dim"), "spectrum": values.get("spectrum")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", choices=("temperature", "heuristics"), required=True)
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--budget", type=float, help="seconds of training per run")
    length.add_argument("--epochs", type=int, help="epochs per run (the recipe's budget lifted)")
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--data", default=None)
    parser.add_argument("--plots", default=None, help="folder for the spectrum plots (PNG)")
    parser.add_argument("--runs", default=None,
                        help="only these runs of the experiment, by label, separated by semicolons")
    args = parser.parse_args()

    from contrastlab.recipes import load_recipe

    recipe = load_recipe(args.recipe).settings
    length = ({"time_budget": args.budget} if args.budget is not None
              else {"time_budget": 0, "epochs": args.epochs})
    runs = TEMPERATURE_RUNS if args.experiment == "temperature" else HEURISTIC_RUNS
    if args.runs is not None:
        wanted = [label.strip() for label in args.runs.split(";")]
        unknown = [label for label in wanted if label not in runs]
        if unknown:
            parser.error(f"unknown run label(s) {unknown}; the experiment has {list(runs)}")
        runs = {label: runs[label] for label in wanted}
    scratch = Path(tempfile.mkdtemp(prefix="bench-spectrum-"))
    results: dict[str, Any] = {}
    try:
        folder = cifar_folder(args.data, scratch / "data")
        for label, changes in runs.items():
            results[label] = run_one(label, settings_for(recipe, changes), folder, length,
                                     scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.plots:
        from contrastlab.report.plots import plot_spectra

        folder_out = Path(args.plots)
        folder_out.mkdir(parents=True, exist_ok=True)
        for space in ("backbone", "projector"):
            spectra = {label: row[space]["spectrum"] for label, row in results.items()
                       if row[space].get("spectrum")}
            plot_spectra({space: spectra},
                         folder_out / f"spectrum-{args.experiment}-{space}.png")
    for row in results.values():  # the spectra are in the plots; keep the JSON short
        for space in ("backbone", "projector"):
            spectrum = row[space].pop("spectrum", None) or []
            row[space]["top_eigenvalues"] = [round(v, 5) for v in spectrum[:8]]
    emit({"benchmark": "spectrum_experiments", "experiment": args.experiment,
          "budget_s": args.budget, "epochs": args.epochs, "recipe": args.recipe,
          "runs": results, "machine": machine()})


if __name__ == "__main__":
    main()
