"""The command line: parses, validates, calls library functions. No training logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contrastlab import __version__
from contrastlab.errors import ContrastlabError

app = typer.Typer(
    name="contrastlab",
    help="Contrastive and self-supervised representation learning: train an encoder on unlabeled "
    "images and measure how good it is.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Evaluate a trained run's frozen encoder.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

err_console = Console(stderr=True)

DATA_HELP = (
    "digits (bundled), fashion-mnist, a folder of images (class sub-folders, optional train/ and "
    "test/), a .tar/.tar.gz of one, a CIFAR python-batches folder, an MNIST IDX folder, or an .npz"
)


def _version(value: bool) -> None:
    if value:
        print(f"contrastlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version,
                                                 is_eager=True, help="Print the version.")] = None,
) -> None:
    """contrastlab command line."""


Opt = typer.Option


@app.command()
def train(
    method: Annotated[str | None, Opt(help="Self-supervised method (simclr).")] = None,
    data: Annotated[str | None, Opt(help=DATA_HELP + ". Default: digits.")] = None,
    backbone: Annotated[str | None, Opt(help="convnet, resnet18/34/50 or their -cifar variants.")]
    = None,
    epochs: Annotated[int | None, Opt(help="Epochs (ignored when --time-budget is set).")] = None,
    batch_size: Annotated[int | None, Opt(help="Images per step (each gives 2 views).")] = None,
    out: Annotated[str | None, Opt(help="Run directory (default runs/<method>-<data>-<time>).")]
    = None,
    config: Annotated[Path | None, Opt(help="YAML file of settings; flags override it.")] = None,
    seed: Annotated[int | None, Opt(help="Seed of initialisation, batch order and views.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or cuda:N.")] = None,
    resume: Annotated[bool | None, Opt("--resume", help="Continue the run in --out.")] = None,
    time_budget: Annotated[float | None, Opt(help="Stop after this many seconds of training; "
                                             "the schedule spans the budget.")] = None,
    optimizer: Annotated[str | None, Opt(help="lars, sgd or adamw.")] = None,
    lr: Annotated[float | None, Opt(help="Peak learning rate (default scales with batch).")]
    = None,
    weight_decay: Annotated[float | None, Opt(help="Weight decay.")] = None,
    warmup_fraction: Annotated[float | None, Opt(help="Share of the schedule spent warming up.")]
    = None,
    temperature: Annotated[float | None, Opt(help="NT-Xent temperature (> 0).")] = None,
    projection_dim: Annotated[int | None, Opt(help="Projection head output size.")] = None,
    projection_hidden_dim: Annotated[int | None, Opt(help="Projection head hidden size.")] = None,
    image_size: Annotated[int | None, Opt(help="Resize images / crop views to this size.")] = None,
    crop_scale: Annotated[str | None, Opt(help="Random resized crop area range, e.g. 0.08,1.")]
    = None,
    jitter_strength: Annotated[float | None, Opt(help="Colour jitter strength s.")] = None,
    jitter_p: Annotated[float | None, Opt(help="Probability of colour jitter.")] = None,
    grey_p: Annotated[float | None, Opt(help="Probability of greyscale.")] = None,
    blur_p: Annotated[float | None, Opt(help="Probability of Gaussian blur (>= 64 px).")] = None,
    flip_p: Annotated[float | None, Opt(help="Probability of horizontal flip.")] = None,
    test_fraction: Annotated[float | None, Opt(help="Held-out share where data has no split.")]
    = None,
    split_seed: Annotated[int | None, Opt(help="Seed of the stratified split.")] = None,
    skip_bad_files: Annotated[bool | None, Opt("--skip-bad-files",
                                               help="Skip unreadable images (counted).")] = None,
    eval_every: Annotated[int | None, Opt(help="Evaluate every N epochs (0: only at the end).")]
    = None,
    knn_k: Annotated[int | None, Opt(help="k of the kNN evaluation.")] = None,
    precision: Annotated[str | None, Opt(help="auto, fp32, bf16 or fp16.")] = None,
    deterministic: Annotated[bool | None, Opt("--deterministic",
                                              help="Deterministic algorithms only.")] = None,
    channels_last: Annotated[bool | None, Opt("--channels-last/--no-channels-last",
                                              help="NHWC memory format (faster convolutions on "
                                              "CPU and GPU).")] = None,
) -> None:
    """Train an encoder with a self-supervised method, then report kNN and linear-probe accuracy."""
    from contrastlab.config import build_config
    from contrastlab.train import train as run_training
    from contrastlab.train.trainer import default_run_name

    overrides: dict[str, Any] = {
        k: v for k, v in locals().items()
        if k not in ("config", "build_config", "run_training", "default_run_name")
    }
    resolved = build_config(config, overrides)
    if out is None and not _given_in_yaml(config, "out"):
        resolved.out = default_run_name(resolved)
    result = run_training(resolved, console=err_console)
    if result.metrics:
        summary = {k: result.metrics[k] for k in ("knn_top1", "linear_top1") if k in result.metrics}
        print(json.dumps({"run": str(result.run_dir), **summary}))


def _given_in_yaml(path: Path | None, key: str) -> bool:
    if path is None:
        return False
    from contrastlab.config import load_yaml

    return key in load_yaml(path)


def _evaluate(protocol: str, run: Path, data: str | None, k: int, temperature: float,
              device: str, as_json: bool) -> None:
    from contrastlab.eval.runs import evaluate_run
    from contrastlab.train.trainer import resolve_device

    scores = evaluate_run(run, (protocol,), data=data, k=k, temperature=temperature,
                          device=resolve_device(device))
    if protocol == "linear":
        scores.pop("k", None)
    if as_json:
        print(json.dumps(scores))
    else:
        for key, value in scores.items():
            shown = f"{100 * value:.2f}%" if key.endswith("top1") else value
            print(f"{key}: {shown}")


RunOpt = Annotated[Path, Opt("--run", help="Run directory written by `contrastlab train`.")]
DataOpt = Annotated[str | None, Opt(help="Data to evaluate on (default: the run's own, with the "
                                    "run's held-out split).")]
JsonOpt = Annotated[bool, Opt("--json", help="Print exactly one JSON object.")]
DeviceOpt = Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")]


@eval_app.command("knn")
def eval_knn(
    run: RunOpt,
    data: DataOpt = None,
    k: Annotated[int, Opt(help="Neighbours.")] = 200,
    temperature: Annotated[float, Opt(help="Vote weight temperature.")] = 0.1,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Weighted kNN (Wu et al. 2018) on frozen, L2-normalised backbone features."""
    _evaluate("knn", run, data, k, temperature, device, as_json)


@eval_app.command("linear")
def eval_linear(
    run: RunOpt,
    data: DataOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Linear probe (logistic regression) on frozen, standardised backbone features."""
    _evaluate("linear", run, data, 200, 0.1, device, as_json)


def main() -> None:
    """Entry point: user mistakes print one clear line (exit code 2), not a traceback."""
    try:
        app()
    except ContrastlabError as error:
        err_console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
