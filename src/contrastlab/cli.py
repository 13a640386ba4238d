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


def _train(**options: Any) -> None:
    """Train an encoder with a self-supervised method, then report kNN and linear-probe accuracy.

    Settings come from the defaults, a recipe (--recipe), a YAML file (--config) and the flags,
    later ones winning; `contrastlab recipes` lists the recipes.
    """
    from contrastlab.api import fit, resolve_config

    config_file, recipe = options.pop("config"), options.pop("recipe")
    resolved = resolve_config(options, config_file=config_file, recipe=recipe)
    try:
        result = fit(resolved, console=err_console)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a new checkpoint
        last = Path(resolved.run.out) / "checkpoints" / "last.pt"
        err_console.print(
            "interrupted at once (second SIGINT): the steps since the last checkpoint are lost. "
            + (f"Continue with: contrastlab train --resume --out {resolved.run.out}"
               if last.is_file() else "No checkpoint was written yet: start the run again")
        )
        raise typer.Exit(130) from None
    if result.stop_reason in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if result.stop_reason == "SIGINT" else 143)
    if result.metrics:
        summary = {k: result.metrics[k] for k in ("knn_top1", "linear_top1") if k in result.metrics}
        print(json.dumps({"run": str(result.run_dir), **summary}))


def _register_train() -> None:
    from contrastlab.cli_settings import (
        SectionedCommand,
        source_parameters,
        with_settings_options,
    )

    extra = source_parameters("Start from a named recipe (see `contrastlab recipes`); --config "
                              "and flags override it.")
    app.command("train", cls=SectionedCommand)(with_settings_options(extra, _train))


_register_train()


@app.command("recipes")
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe's settings.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print exactly one JSON object.")] = False,
) -> None:
    """The shipped recipes: tuned settings by name, what they were tuned on and the figure each
    reached (use one with `contrastlab train --recipe NAME`; the text and image-text recipes,
    listed after the image ones, with `train-text` / `train-pairs --recipe NAME`)."""
    from rich.table import Table

    from contrastlab.recipes import (
        all_recipes,
        load_pair_recipe,
        load_recipe,
        load_text_recipe,
        pair_recipe_names,
        text_recipe_names,
    )

    if name is not None:
        if name in text_recipe_names():
            recipe = load_text_recipe(name)
        elif name in pair_recipe_names():
            recipe = load_pair_recipe(name)
        else:
            recipe = load_recipe(name)
        if as_json:
            print(json.dumps({"name": recipe.name, "about": recipe.about,
                              "settings": recipe.settings}))
            return
        print(f"# {recipe.name}: {recipe.summary}")
        for key, value in recipe.about.items():
            if key != "summary":
                print(f"# {key}: {value}")
        import yaml

        print(yaml.safe_dump(recipe.settings, sort_keys=False, default_flow_style=None).strip())
        return
    found = all_recipes()
    if as_json:
        print(json.dumps([{"name": r.name, **r.about, "method": r.settings.get("method"),
                           "backbone": r.settings.get("backbone")} for r in found]))
        return
    table = Table(title="recipes (contrastlab train --recipe NAME)", show_lines=True)
    for column in ("name", "tuned on", "method / backbone", "figure", "measured by"):
        table.add_column(column, overflow="fold")
    for recipe in found:
        table.add_row(recipe.name, str(recipe.about.get("tuned_on", "")),
                      f"{recipe.settings.get('method', 'simclr')} / "
                      f"{recipe.settings.get('backbone', 'convnet')}",
                      str(recipe.about.get("figure", "")),
                      str(recipe.about.get("command", "")))
    Console().print(table)
    for command, names, load in (("train-text", text_recipe_names(), load_text_recipe),
                                 ("train-pairs", pair_recipe_names(), load_pair_recipe)):
        table = Table(title=f"recipes of contrastlab {command} --recipe NAME", show_lines=True)
        for column in ("name", "tuned on", "figure", "measured by"):
            table.add_column(column, overflow="fold")
        for recipe in map(load, names):
            table.add_row(recipe.name, str(recipe.about.get("tuned_on", "")),
                          str(recipe.about.get("figure", "")),
                          str(recipe.about.get("command", "")))
        Console().print(table)


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
    from contrastlab.runs.device import resolve_device

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
    data: DataOpt = None,
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
    from contrastlab.runs.device import resolve_device

    settings = FinetuneSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    settings.check()
    scores = finetune_run(run, label_fraction, settings, features, resolve_device(device),
                          subset_seed, data=data)
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
    data: DataOpt = None,
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
    from contrastlab.runs.device import resolve_device

    shot_list = _parse_shots(shots)
    check_fewshot_args(ways, shot_list, episodes, queries)
    scores = fewshot_run(run, ways, shot_list, episodes, queries, features, seed,
                         resolve_device(device), data=data)
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
    from contrastlab.runs.device import resolve_device

    check_features(features)
    scores = transfer_run(run, data, probe_data, k=k, temperature=temperature,
                          features=features, device=resolve_device(device))
    _print_scores(scores, as_json)


shards_app = typer.Typer(help="Make WebDataset tar shards that training streams from.",
                         no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("build")
def shards_build(
    data: Annotated[str, Opt(help=DATA_HELP + ".")],
    out: Annotated[Path, Opt(help="Folder to write the shards into (OUT/train and OUT/test "
                                  "for data with an official split).")],
    shard_size: Annotated[str, Opt(help="Close a shard once it holds this much (e.g. 1GB, "
                                        "256MB).")] = "1GB",
    max_side: Annotated[int | None, Opt(min=8, help="Store images whose shorter side is longer "
                                        "than this resized to it (JPEG); others as they are.")
                        ] = None,
    skip_bad_files: Annotated[bool, Opt("--skip-bad-files", help="Leave unreadable images out "
                                        "(counted) instead of failing.")] = False,
    force: Annotated[bool, Opt("--force", help="Write into OUT even if it holds files.")] = False,
    seed: Annotated[int, Opt(help="Seed of the shuffled order the samples are written in.")] = 0,
) -> None:
    """Write a dataset as WebDataset tar shards with a shards.json index (train with
    `--data OUT`)."""
    from contrastlab.data.shard_build import build_shards
    from contrastlab.data.shard_writer import parse_size
    from contrastlab.errors import ConfigError

    shard_bytes = parse_size(shard_size)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConfigError(f"'{out}' already exists and is not an empty folder; pass --force to "
                          "write the shards into it anyway, or choose another --out")
    report = build_shards(data, out, shard_bytes=shard_bytes, max_side=max_side,
                          skip_bad_files=skip_bad_files, seed=seed)
    for side, counts in report.sides.items():
        folder = out / side if side else out
        err_console.print(f"{folder}: {len(counts)} shard(s), {sum(counts.values())} images")
    if report.skipped:
        err_console.print(f"[yellow]skipped {len(report.skipped)} unreadable file(s), e.g. "
                          f"{report.skipped[0]}[/yellow]")
    print(json.dumps({"out": str(out), "samples": report.samples,
                      "shards": sum(len(c) for c in report.sides.values()),
                      "skipped": len(report.skipped)}))


# embed, export, index build, search, serve (issue 6); their heavy imports are lazy.
from contrastlab.serve.cli import register as _register_serving  # noqa: E402

_register_serving(app)

# diagnose, report, compare (issue 4); matplotlib and the model are imported inside the commands.
from contrastlab.report.cli import register as _register_reports  # noqa: E402

_register_reports(app)

# tokenizer train, train-text, eval sts (issue 21); tokenizers is imported inside the commands.
from contrastlab.cli_text import register as _register_text  # noqa: E402

_register_text(app, eval_app)

# train-pairs, eval zeroshot, eval retrieval (issue 21: CLIP / SigLIP with a text tower).
from contrastlab.cli_pairs import register as _register_pairs  # noqa: E402

_register_pairs(app, eval_app)


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
