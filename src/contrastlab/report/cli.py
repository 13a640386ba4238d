"""The ``diagnose``, ``report`` and ``compare`` commands.

Registered on the main typer application by :func:`register`; matplotlib, scikit-learn and the
model are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

Opt = typer.Option
Arg = typer.Argument
out_console = Console()
err_console = Console(stderr=True)

DeviceOpt = Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")]
DIAGNOSTIC_ROWS = (
    ("dim", "dimension D"),
    ("alignment", "alignment (lower: positives closer)"),
    ("uniformity", "uniformity (lower: more spread)"),
    ("effective_rank", "effective rank (RankMe)"),
    ("effective_rank_ratio", "effective rank / max"),
    ("top5_eigenvalue_ratio", "variance in the 5 largest eigenvalues"),
    ("normalized_std", "std of L2-normalised embeddings"),
    ("normalized_std_ratio", "std x sqrt(D) (1: spread, 0: collapsed)"),
    ("positive_cosine", "mean cosine, positive pairs"),
    ("negative_cosine", "mean cosine, different images"),
)


def _device(name: str) -> Any:
    from contrastlab.runs.device import resolve_device

    return resolve_device(name)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def diagnose(
    run: Annotated[Path, Opt("--run", help="Run directory written by `contrastlab train`.")],
    data: Annotated[str | None, Opt(help="Data to diagnose on (default: the run's own training "
                                    "split).")] = None,
    images: Annotated[int, Opt(help="Images diagnosed (a seeded subset).")] = 2000,
    seed: Annotated[int | None, Opt(help="Seed of the subset and the views (default: the "
                                    "run's seed, as in training's diagnostics).")] = None,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, Opt("--json", help="Print exactly one JSON object (with the "
                                 "covariance spectrum).")] = False,
) -> None:
    """Alignment, uniformity, effective rank, spectrum and collapse signs of a run's embeddings
    (projector and backbone), on two augmented views of its training images."""
    from contrastlab.errors import ConfigError
    from contrastlab.eval.run_diagnostics import diagnose_run

    if images < 2:
        raise ConfigError(f"--images must be >= 2, got {images}")
    result = diagnose_run(run, data, _device(device), max_images=images, seed=seed)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"diagnostics of {run} (epoch {result['epoch']}, "
                  f"{result['projector']['n']} images of {result['data']}, two views each)")
    table.add_column("measure")
    table.add_column("projector", justify="right")
    table.add_column("backbone", justify="right")
    for key, label in DIAGNOSTIC_ROWS:
        table.add_row(label, _shown(result["projector"].get(key)),
                      _shown(result["backbone"].get(key)))
    out_console.print(table)
    if not result["collapse"]:
        out_console.print("no sign of collapse in either space")
    for finding in result["collapse"]:
        out_console.print(f"[bold red]{finding['kind']} collapse ({finding['space']}):[/bold red] "
                          f"{finding['evidence']}", highlight=False)


def report(
    run: Annotated[Path, Arg(help="Run directory written by `contrastlab train`.")],
    out: Annotated[Path | None, Opt(help="Folder for report.html and its PNGs (default: "
                                    "RUN/report).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Write a self-contained HTML report of a run: curves, diagnostics, spectrum, embedding map,
    augmented views, nearest neighbours, configuration."""
    from contrastlab.report.report import write_report

    print(write_report(run, out, _device(device)))  # the page's path


def compare(
    runs: Annotated[list[Path], Arg(help="Run directories to compare.")],
    out: Annotated[Path | None, Opt(help="Also write OUT/compare.html with the table and "
                                    "overlaid loss / accuracy curves.")] = None,
) -> None:
    """One table of the runs' final metrics (and an HTML page with curves, with --out)."""
    from contrastlab.report.compare import HEADER, comparison_rows, read_runs, write_comparison

    records = read_runs(runs)
    table = Table(title="runs compared")
    for name in HEADER:
        table.add_column(name, justify="right" if name not in ("run", "method", "backbone",
                                                               "data", "alarm") else "left")
    for row in comparison_rows(records):
        table.add_row(*(_shown(v) for v in row))
    out_console.print(table)
    if out is not None:
        err_console.print(f"comparison written to {write_comparison(records, out)}")


def register(app: typer.Typer) -> None:
    """Add ``diagnose``, ``report`` and ``compare`` to ``app``."""
    app.command("diagnose")(diagnose)
    app.command("report")(report)
    app.command("compare")(compare)
