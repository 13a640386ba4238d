"""``contrastlab compare RUN1 RUN2 ...``: one table of final metrics, and an HTML page with the
table and the runs' loss and accuracy curves overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastlab.report.html import HtmlPage
from contrastlab.report.plots import Panel, plot_lines
from contrastlab.report.records import RunRecords, read_run
from contrastlab.report.sections import ACCURACY_KEYS

COMPARE_NAME = "compare.html"
HEADER = ("run", "method", "backbone", "data", "epochs", "train s", "kNN top-1", "linear top-1",
          "eff. rank (proj.)", "alarm")


def run_labels(runs: Sequence[RunRecords]) -> list[str]:
    """Short names: the folder name, or the whole path where two folders share a name."""
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else str(r.root) for r in runs]


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def comparison_rows(runs: Sequence[RunRecords]) -> list[list[Any]]:
    """One row per run, in :data:`HEADER` order; missing values are ``"-"``."""
    rows = []
    for label, run in zip(run_labels(runs), runs, strict=True):
        final, config = run.final_metrics, run.config
        epochs = final.get("epoch")
        if epochs is None:
            done = run.of_type("epoch")
            epochs = done[-1]["epoch"] if done else "-"
        diagnosed = run.of_type("diagnostics")
        projector = diagnosed[-1].get("projector", {}) if diagnosed else {}
        rank = projector.get("effective_rank") if isinstance(projector, dict) else None
        alarms = run.of_type("alarm")
        rows.append([
            label, config.get("method", "-"), config.get("backbone", "-"),
            config.get("data", "-"), epochs, final.get("train_seconds", "-"),
            _percent(final.get("knn_top1")), _percent(final.get("linear_top1")),
            "-" if rank is None else f"{rank:.1f} / {projector.get('dim')}",
            f"{alarms[-1].get('kind', '?')} collapse" if alarms else
            ("none" if diagnosed else "-"),
        ])
    return rows


def read_runs(paths: Sequence[str | Path]) -> list[RunRecords]:
    """Read every run (``CheckpointError`` naming the first that is not a run directory)."""
    return [read_run(path) for path in paths]


def write_comparison(runs: Sequence[RunRecords], out: str | Path) -> Path:
    """Write ``OUT/compare.html`` with the table and overlaid curves; returns its path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs)
    page = HtmlPage("contrastlab comparison", f"{len(runs)} runs")
    page.section("Final metrics")
    page.table(HEADER, comparison_rows(runs))

    page.section("Training loss")
    losses = {}
    for label, run in zip(labels, runs, strict=True):
        epochs = [r for r in run.of_type("epoch") if r.get("loss") is not None]
        if epochs:
            losses[label] = ([r["epoch"] for r in epochs], [r["loss"] for r in epochs])
    if losses:
        page.image(plot_lines([Panel("mean training loss per epoch", "loss", losses)], "epoch",
                              folder / "compare_loss.png"), "training loss of every run")
    else:
        page.missing("No run recorded epoch losses.")

    page.section("Accuracy during training")
    panels = []
    for key, name in ACCURACY_KEYS.items():
        series = {}
        for label, run in zip(labels, runs, strict=True):
            points = [(r["epoch"], 100 * r[key]) for r in run.of_type("eval")
                      if r.get(key) is not None]
            if points:
                series[label] = ([p[0] for p in points], [p[1] for p in points])
        if series:
            panels.append(Panel(name, "top-1 (%)", series))
    if panels:
        page.image(plot_lines(panels, "epoch", folder / "compare_accuracy.png"),
                   "accuracy of every run")
    else:
        page.missing("No run evaluated during training (train with --eval-every N).")
    return page.write(folder / COMPARE_NAME)
