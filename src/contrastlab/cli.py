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
    method: Annotated[str | None, Opt(help="Method: simclr, moco-v2, moco-v3, byol, simsiam, "
                                      "nnclr, swav, dino, barlow-twins, vicreg, supcon, dcl, "
                                      "dclw, triplet, npair, rotnet, mae, clip, siglip, "
                                      "supervised.")] = None,
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
    temperature: Annotated[float | None, Opt(help="Contrastive / student temperature (> 0; "
                                             "default: the method's).")] = None,
    projection_dim: Annotated[int | None, Opt(help="Projection head output size.")] = None,
    projection_hidden_dim: Annotated[int | None, Opt(help="Projection head hidden size.")] = None,
    prediction_hidden_dim: Annotated[int | None, Opt(help="Predictor hidden size (BYOL, SimSiam, "
                                                     "MoCo v3, NNCLR).")] = None,
    queue_size: Annotated[int | None, Opt(help="Queue of negatives / support set / SwAV "
                                          "features (0: none).")] = None,
    ema_momentum: Annotated[float | None, Opt(help="Momentum of the EMA teacher / key encoder, "
                                              "in [0, 1).")] = None,
    ema_cosine: Annotated[bool | None, Opt("--ema-cosine/--no-ema-cosine",
                                           help="Raise the EMA momentum to 1 on a cosine.")]
    = None,
    num_prototypes: Annotated[int | None, Opt(help="Prototypes (SwAV) / output dim (DINO).")]
    = None,
    freeze_prototypes_steps: Annotated[int | None, Opt(help="SwAV: steps with frozen "
                                                       "prototypes (DINO: head's last "
                                                       "layer).")] = None,
    sinkhorn_iterations: Annotated[int | None, Opt(help="SwAV Sinkhorn-Knopp iterations.")]
    = None,
    sinkhorn_epsilon: Annotated[float | None, Opt(help="SwAV Sinkhorn entropy epsilon.")] = None,
    teacher_temperature: Annotated[float | None, Opt(help="DINO teacher temperature after "
                                                     "warm-up.")] = None,
    warmup_teacher_temperature: Annotated[float | None, Opt(help="DINO teacher temperature at "
                                                            "the start.")] = None,
    teacher_temperature_warmup: Annotated[float | None, Opt(help="DINO: share of the schedule "
                                                            "for the warm-up.")] = None,
    center_momentum: Annotated[float | None, Opt(help="DINO centre momentum.")] = None,
    off_diagonal_weight: Annotated[float | None, Opt(help="Barlow Twins lambda.")] = None,
    invariance_weight: Annotated[float | None, Opt(help="VICReg invariance weight.")] = None,
    variance_weight: Annotated[float | None, Opt(help="VICReg variance weight.")] = None,
    covariance_weight: Annotated[float | None, Opt(help="VICReg covariance weight.")] = None,
    weight_sigma: Annotated[float | None, Opt(help="DCLW weighting sigma.")] = None,
    margin: Annotated[float | None, Opt(help="Triplet margin.")] = None,
    mining: Annotated[str | None, Opt(help="Triplet mining: none, batch-hard, semi-hard.")]
    = None,
    mask_ratio: Annotated[float | None, Opt(help="MAE share of patches masked.")] = None,
    bn_groups: Annotated[int | None, Opt(help="MoCo v2 shuffling BN: ghost groups of the global "
                                         "batch (under torchrun a multiple of the process "
                                         "count).")] = None,
    num_views: Annotated[int | None, Opt(help="SupCon: augmented views per image (2 as in the "
                                         "paper; 1: the labels alone give the positives).")]
    = None,
    patch_size: Annotated[int | None, Opt(help="ViT patch size in pixels.")] = None,
    loss_chunk_size: Annotated[int | None, Opt(help="Rows per tile of the memory-efficient exact "
                                               "contrastive loss (default: tiled only when the "
                                               "N x N logits would exceed 256 MiB).")] = None,
    micro_batch: Annotated[int | None, Opt(help="GradCache: images per micro-batch of "
                                           "activations; the gradient is the full batch's "
                                           "(one extra encoder forward per step), except that "
                                           "batch norm uses per-micro-batch statistics. One "
                                           "process; SimCLR-like methods (see docs/cli.md).")]
    = None,
    num_local_crops: Annotated[int | None, Opt(help="Multi-crop: small views per image "
                                               "(SwAV, DINO).")] = None,
    local_crop_size: Annotated[int | None, Opt(help="Multi-crop: side of the small views.")]
    = None,
    local_crop_scale: Annotated[str | None, Opt(help="Multi-crop: area range of the small "
                                                "views, e.g. 0.05,0.4.")] = None,
    image_size: Annotated[int | None, Opt(help="Resize images / crop views to this size.")] = None,
    crop_scale: Annotated[str | None, Opt(help="Random resized crop area range, e.g. 0.08,1.")]
    = None,
    jitter_strength: Annotated[float | None, Opt(help="Colour jitter strength s.")] = None,
    jitter_p: Annotated[float | None, Opt(help="Probability of colour jitter.")] = None,
    grey_p: Annotated[float | None, Opt(help="Probability of greyscale.")] = None,
    blur_p: Annotated[float | None, Opt(help="Probability of Gaussian blur (>= 64 px).")] = None,
    flip_p: Annotated[float | None, Opt(help="Probability of horizontal flip.")] = None,
    rotation: Annotated[float | None, Opt(help="Turn each crop by up to +-this many degrees "
                                          "(0: off; ~15 suits digits).")] = None,
    test_fraction: Annotated[float | None, Opt(help="Held-out share where data has no split.")]
    = None,
    split_seed: Annotated[int | None, Opt(help="Seed of the stratified split.")] = None,
    skip_bad_files: Annotated[bool | None, Opt("--skip-bad-files",
                                               help="Skip unreadable images (counted).")] = None,
    eval_every: Annotated[int | None, Opt(help="Evaluate every N epochs (0: only at the end).")]
    = None,
    diagnose_every: Annotated[int | None, Opt(help="Embedding diagnostics and collapse alarm "
                                              "every N epochs and at the end (0: off).")] = None,
    knn_k: Annotated[int | None, Opt(help="k of the kNN evaluation.")] = None,
    precision: Annotated[str | None, Opt(help="auto, fp32, bf16, fp16 or fp64 (float64, for "
                                         "exactness checks).")] = None,
    deterministic: Annotated[bool | None, Opt("--deterministic",
                                              help="Deterministic algorithms only.")] = None,
    sync_batchnorm: Annotated[bool | None, Opt("--sync-batchnorm/--no-sync-batchnorm",
                                               help="Under torchrun: batch norm statistics over "
                                               "the global batch (default on).")] = None,
    channels_last: Annotated[bool | None, Opt("--channels-last/--no-channels-last",
                                              help="NHWC memory format (faster convolutions on "
                                              "CPU and GPU).")] = None,
    compile: Annotated[bool | None, Opt("--compile/--no-compile",
                                        help="torch.compile the backbone (compiles during the "
                                        "first steps; see docs/benchmarks.md for when it "
                                        "pays).")] = None,
    keep: Annotated[int | None, Opt(help="Also keep a checkpoint every N epochs "
                                    "(checkpoints/epoch-N.pt); last.pt and best.pt always.")]
    = None,
    max_nonfinite_steps: Annotated[int | None, Opt(help="Stop after this many non-finite steps "
                                                   "in a row (each is skipped).")] = None,
    clip_grad_norm: Annotated[float | None, Opt(help="Clip the gradients' total L2 norm.")]
    = None,
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
    try:
        result = run_training(resolved, console=err_console)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a new checkpoint
        last = Path(resolved.out) / "checkpoints" / "last.pt"
        err_console.print(
            "interrupted at once (second SIGINT): the steps since the last checkpoint are lost. "
            + (f"Continue with: contrastlab train --resume --out {resolved.out}" if last.is_file()
               else "No checkpoint was written yet: start the run again")
        )
        raise typer.Exit(130) from None
    if result.stop_reason in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if result.stop_reason == "SIGINT" else 143)
    if result.metrics:
        summary = {k: result.metrics[k] for k in ("knn_top1", "linear_top1") if k in result.metrics}
        print(json.dumps({"run": str(result.run_dir), **summary}))


def _given_in_yaml(path: Path | None, key: str) -> bool:
    if path is None:
        return False
    from contrastlab.config import load_yaml

    return key in load_yaml(path)


def _print_scores(scores: dict[str, Any], as_json: bool) -> None:
    """Exactly one JSON object with ``--json``, else one ``key: value`` line per score."""
    if as_json:
        print(json.dumps(scores))
        return
    for key, value in scores.items():
        percent = key.endswith(("top1", "top5", "ci95")) and isinstance(value, float)
        print(f"{key}: {100 * value:.2f}%" if percent else f"{key}: {value}")


def _evaluate(protocol: str, run: Path, data: str | None, k: int, temperature: float,
              device: str, as_json: bool, label_fraction: float = 1.0,
              features: str = "backbone", subset_seed: int = 0) -> None:
    from contrastlab.eval.runs import check_features, evaluate_run
    from contrastlab.eval.subsets import check_label_fraction
    from contrastlab.train.trainer import resolve_device

    check_label_fraction(label_fraction)
    check_features(features)
    scores = evaluate_run(run, (protocol,), data=data, k=k, temperature=temperature,
                          device=resolve_device(device), label_fraction=label_fraction,
                          features=features, subset_seed=subset_seed)
    if protocol == "linear":
        scores.pop("k", None)
    _print_scores(scores, as_json)


RunOpt = Annotated[Path, Opt("--run", help="Run directory written by `contrastlab train`.")]
DataOpt = Annotated[str | None, Opt(help="Data to evaluate on (default: the run's own, with the "
                                    "run's held-out split).")]
JsonOpt = Annotated[bool, Opt("--json", help="Print exactly one JSON object.")]
DeviceOpt = Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")]
LabelFractionOpt = Annotated[float, Opt(help="Share of the training labels used, in (0, 1]: a "
                                        "stratified, seeded subset (>= 1 image per class).")]
SubsetSeedOpt = Annotated[int, Opt(help="Seed of the --label-fraction subset.")]
FeaturesOpt = Annotated[str, Opt(help="backbone (method.encode) or projector (method.project).")]


@eval_app.command("knn")
def eval_knn(
    run: RunOpt,
    data: DataOpt = None,
    k: Annotated[int, Opt(help="Neighbours.")] = 200,
    temperature: Annotated[float, Opt(help="Vote weight temperature.")] = 0.1,
    label_fraction: LabelFractionOpt = 1.0,
    features: FeaturesOpt = "backbone",
    subset_seed: SubsetSeedOpt = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Weighted kNN (Wu et al. 2018) on frozen, L2-normalised features."""
    _evaluate("knn", run, data, k, temperature, device, as_json, label_fraction, features,
              subset_seed)


@eval_app.command("linear")
def eval_linear(
    run: RunOpt,
    data: DataOpt = None,
    label_fraction: LabelFractionOpt = 1.0,
    features: FeaturesOpt = "backbone",
    subset_seed: SubsetSeedOpt = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Linear probe (logistic regression) on frozen, standardised features."""
    _evaluate("linear", run, data, 200, 0.1, device, as_json, label_fraction, features,
              subset_seed)


@eval_app.command("finetune")
def eval_finetune(
    run: RunOpt,
    label_fraction: LabelFractionOpt = 1.0,
    epochs: Annotated[int | None, Opt(help="Epochs over the labelled images (default: enough "
                                      "for ~300 steps, 10-100 epochs).")] = None,
    lr: Annotated[float, Opt(help="Peak learning rate (SGD, Nesterov, cosine).")] = 0.05,
    batch_size: Annotated[int, Opt(help="Labelled images per step.")] = 64,
    features: FeaturesOpt = "backbone",
    subset_seed: SubsetSeedOpt = 0,
    seed: Annotated[int, Opt(help="Seed of batch order and crops.")] = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a copy of the encoder with a new linear head on the labelled fraction."""
    from contrastlab.eval.finetune import FinetuneSettings, finetune_run
    from contrastlab.train.trainer import resolve_device

    settings = FinetuneSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    settings.check()
    scores = finetune_run(run, label_fraction, settings, features, resolve_device(device),
                          subset_seed)
    _print_scores(scores, as_json)


def _parse_shots(text: str) -> list[int]:
    from contrastlab.errors import ConfigError

    try:
        shots = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        shots = []
    if not shots or min(shots) < 1:
        raise ConfigError(f"--shots must be a comma-separated list of integers >= 1 (e.g. 1,5), "
                          f"got '{text}'")
    return shots


@eval_app.command("fewshot")
def eval_fewshot(
    run: RunOpt,
    ways: Annotated[int, Opt(help="Classes per episode (N).")] = 5,
    shots: Annotated[str, Opt(help="Support images per class (K), comma-separated.")] = "1,5",
    episodes: Annotated[int, Opt(help="Episodes per K.")] = 600,
    queries: Annotated[int, Opt(help="Query images per class.")] = 15,
    features: FeaturesOpt = "backbone",
    seed: Annotated[int, Opt(help="Seed of the episodes.")] = 0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """N-way K-shot episodes on the test split: nearest cosine prototype, mean and 95% CI."""
    from contrastlab.eval.fewshot import check_fewshot_args, fewshot_run
    from contrastlab.train.trainer import resolve_device

    shot_list = _parse_shots(shots)
    check_fewshot_args(ways, shot_list, episodes, queries)
    scores = fewshot_run(run, ways, shot_list, episodes, queries, features, seed,
                         resolve_device(device))
    _print_scores(scores, as_json)


@eval_app.command("transfer")
def eval_transfer(
    run: RunOpt,
    data: Annotated[str, Opt(help="Second dataset D2: kNN and linear probe on its train/test.")],
    probe_data: Annotated[str | None, Opt(help="Dataset D1 with D2's classes: fit on D1's "
                                          "training images, test on D2's test images.")] = None,
    k: Annotated[int, Opt(help="Neighbours of the kNN.")] = 200,
    temperature: Annotated[float, Opt(help="kNN vote weight temperature.")] = 0.1,
    features: FeaturesOpt = "backbone",
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Frozen encoder on another dataset (and a probe carried over from --probe-data)."""
    from contrastlab.eval.runs import check_features
    from contrastlab.eval.transfer import transfer_run
    from contrastlab.train.trainer import resolve_device

    check_features(features)
    scores = transfer_run(run, data, probe_data, k=k, temperature=temperature,
                          features=features, device=resolve_device(device))
    _print_scores(scores, as_json)


# embed, export, index build, search, serve (issue 6); their heavy imports are lazy.
from contrastlab.serve.cli import register as _register_serving  # noqa: E402

_register_serving(app)

# diagnose, report, compare (issue 4); matplotlib and the model are imported inside the commands.
from contrastlab.report.cli import register as _register_reports  # noqa: E402

_register_reports(app)


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
