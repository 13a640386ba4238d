"""The image-text commands (issue 21): ``train-pairs`` (CLIP / SigLIP with a text tower),
``eval zeroshot`` and ``eval retrieval``.

``train-pairs``'s options are generated from the declarations of the image-text run's sections
(:mod:`contrastlab.training.pair_settings`), as ``train-text``'s are; the method section offers
CLIP's and SigLIP's settings with each method's default. :func:`register` adds the commands to
the application of ``cli.py``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contrastlab.cli_settings import (
    SectionedCommand,
    _method_help,
    _parameter,
    _section_help,
    exit_if_stopped,
    source_parameters,
)
from contrastlab.settings import declarations

Opt = typer.Option
err_console = Console(stderr=True)

PAIR_PANELS = {"train": "Training", "encoder": "Text encoder", "method": "Method (CLIP, SigLIP)",
               "views": "Image augmentation", "optimizer": "Optimizer"}


def pair_settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per flat key of the image-text sections."""
    from contrastlab.methods.image_text import IMAGE_TEXT_METHODS
    from contrastlab.training.pair_settings import PAIR_SECTIONS
    from contrastlab.training.text_settings import section_declarations

    parameters = []
    for section, entry in PAIR_SECTIONS.items():
        for declaration in section_declarations(entry):
            if not declaration.cli:
                continue
            if section == "method":
                uses = [(name, d) for name, m in IMAGE_TEXT_METHODS.items()
                        for d in declarations(m.Settings) if d.key == declaration.key]
                help_text = _method_help(uses)
            else:
                help_text = _section_help(declaration)
            parameters.append(_parameter(declaration.key, declaration, help_text,
                                         PAIR_PANELS[section]))
    return parameters


def _train_pairs(**options: Any) -> None:
    """Train an image tower and a text tower on image-caption pairs with CLIP's or SigLIP's
    loss (docs/text.md), then optionally score the run on labelled images (--eval-data: zero-shot
    with --templates) and pairs (--eval-pairs: retrieval R@k).

    Settings come from the defaults, an image-text recipe (--recipe), a YAML file (--config)
    and the flags, later ones winning; with --resume --out RUN, from the run's checkpoint.
    Prints one JSON object.
    """
    from contrastlab.eval.retrieval import evaluate_retrieval_run
    from contrastlab.eval.zeroshot import DEFAULT_TEMPLATES, evaluate_zeroshot_run
    from contrastlab.recipes import load_pair_recipe
    from contrastlab.training.pair_settings import resolve_pair_settings
    from contrastlab.training.pair_trainer import fit_pairs

    config_file, recipe = options.pop("config"), options.pop("recipe")
    eval_data, eval_pairs = options.pop("eval_data"), options.pop("eval_pairs")
    templates = options.pop("templates") or list(DEFAULT_TEMPLATES)
    recipe_values = load_pair_recipe(recipe).settings if recipe else None
    settings = resolve_pair_settings(options, config_file=config_file, recipe=recipe_values,
                                     recipe_name=recipe)
    result = fit_pairs(settings, say=lambda text: err_console.print(text, highlight=False))
    if not result.is_main:
        return  # torchrun: rank 0 alone reports and evaluates
    exit_if_stopped("train-pairs", result.run_dir, result.stop_reason, result.steps)
    summary: dict[str, Any] = {"run": str(result.run_dir), "steps": result.steps,
                               "stop_reason": result.stop_reason}
    device = settings.train.device if settings.train.device != "auto" else "cpu"
    if eval_data:
        scores = evaluate_zeroshot_run(result.run_dir, eval_data, templates, device)
        summary.update({k: round(v, 2) for k, v in scores.items() if k.startswith("zeroshot")})
    if eval_pairs:
        scores = evaluate_retrieval_run(result.run_dir, eval_pairs, device)
        summary.update({k: round(v, 2) for k, v in scores.items() if "_R@" in k})
    print(json.dumps(summary))


def _templates_option(help_text: str) -> Any:
    return Annotated[list[str] | None, Opt("--templates", help=help_text,
                                           rich_help_panel="Evaluation")]


TEMPLATES_HELP = ("Prompt template with {} for the class name; repeat for prompt ensembling. "
                  "Default: 'a photo of a {}.'.")


def _register_train_pairs(app: typer.Typer) -> None:
    sources = source_parameters("Start from an image-text recipe (e.g. "
                                "cifar10-clip-templated-cpu); --config and flags override it.")
    evaluation = [
        inspect.Parameter("eval_data", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, Opt(
                              help="After training, zero-shot accuracy on these labelled "
                              "images (class folders).", rich_help_panel="Evaluation")]),
        inspect.Parameter("templates", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=_templates_option(TEMPLATES_HELP)),
        inspect.Parameter("eval_pairs", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, Opt(
                              help="After training, retrieval R@1/5/10 on these pairs.",
                              rich_help_panel="Evaluation")]),
    ]
    parameters = [*sources, *evaluation, *pair_settings_parameters()]

    def command(**options: Any) -> None:
        _train_pairs(**options)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = _train_pairs.__doc__
    app.command("train-pairs", cls=SectionedCommand)(command)


def _print(scores: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(scores))
        return
    for key, value in scores.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


def eval_zeroshot(
    run: Annotated[Path, Opt("--run", help="Run directory written by `contrastlab "
                             "train-pairs`.")],
    data: Annotated[str, Opt(help="Labelled images: class folders (their names are the class "
                             "names); with train/ and test/ folders the test split.")],
    templates: _templates_option(TEMPLATES_HELP) = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    skip_bad_files: Annotated[bool, Opt(help="Leave unreadable images out.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print exactly one JSON object.")] = False,
) -> None:
    """Zero-shot top-1 / top-5 accuracy: each class's prompts ("a photo of a {}.") embedded by
    the text tower and averaged (prompt ensembling), each image given the closest class."""
    from contrastlab.eval.zeroshot import DEFAULT_TEMPLATES, evaluate_zeroshot_run
    from contrastlab.runs.device import resolve_device

    _print(evaluate_zeroshot_run(run, data, templates or list(DEFAULT_TEMPLATES),
                                 resolve_device(device), skip_bad_files), as_json)


def eval_retrieval(
    run: Annotated[Path, Opt("--run", help="Run directory written by `contrastlab "
                             "train-pairs`.")],
    data: Annotated[str, Opt(help="Image-caption pairs (a folder with .txt captions, a "
                             ".csv/.jsonl of path,caption, or shards).")],
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    skip_bad_files: Annotated[bool, Opt(help="Leave bad rows out (counted).")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print exactly one JSON object.")] = False,
) -> None:
    """Image-to-text and text-to-image recall at 1, 5 and 10 (x 100) over the pairs of --data."""
    from contrastlab.eval.retrieval import evaluate_retrieval_run
    from contrastlab.runs.device import resolve_device

    _print(evaluate_retrieval_run(run, data, resolve_device(device), skip_bad_files), as_json)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``train-pairs``, ``eval zeroshot`` and ``eval retrieval`` to the application."""
    _register_train_pairs(app)
    eval_app.command("zeroshot")(eval_zeroshot)
    eval_app.command("retrieval")(eval_retrieval)


__all__ = ["pair_settings_parameters", "register"]
