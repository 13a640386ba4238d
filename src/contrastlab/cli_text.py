"""The text commands (issue 21): ``tokenizer train``, ``train-text`` (SimCSE) and ``eval sts``.

``train-text``'s options are generated from the declarations of the text run's sections
(:mod:`contrastlab.training.text_settings`), as ``train``'s are from the image sections, with
the same help layout. :func:`register` adds the commands to the application of ``cli.py``.
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
    _parameter,
    _section_help,
    exit_if_stopped,
    source_parameters,
)
from contrastlab.settings import declarations

Opt = typer.Option
err_console = Console(stderr=True)

TEXT_PANELS = {"train": "Training", "encoder": "Encoder", "ngrams": "N-gram encoder",
               "method": "Method (SimCSE)",
               "optimizer": "Optimizer"}

tokenizer_app = typer.Typer(help="Train a sub-word tokenizer for text runs.",
                            no_args_is_help=True)


@tokenizer_app.command("train")
def tokenizer_train(
    data: Annotated[str, Opt(help="Text to learn from: sentence files (.txt, .txt.gz) or pair "
                             "files (.tsv, .csv, .jsonl), comma-separated.")],
    out: Annotated[Path, Opt(help="Where to write the tokenizer (a tokenizer.json).")],
    vocab_size: Annotated[int, Opt(help="Vocabulary size (special tokens included).")] = 8000,
    kind: Annotated[str, Opt(help="wordpiece (BERT) or bpe.")] = "wordpiece",
    min_frequency: Annotated[int, Opt(help="Keep merges seen at least this often.")] = 2,
    skip_bad_files: Annotated[bool, Opt(help="Leave bad rows out (counted) instead of stopping "
                                        "at the first.")] = False,
) -> None:
    """Train a BERT-like sub-word tokenizer on the sentences of --data (docs/text.md); prints
    one JSON object."""
    from contrastlab.atomic import write_text_atomic
    from contrastlab.data.text import read_sentences
    from contrastlab.data.tokenizer import train_tokenizer
    from contrastlab.training.text_settings import data_paths

    texts, skipped = [], 0
    for path in data_paths(data):
        read = read_sentences(path, skip_bad_files)
        texts += read.texts
        skipped += len(read.skipped)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, kind=kind,
                                min_frequency=min_frequency)
    write_text_atomic(out, tokenizer.to_json(), "tokenizer")
    print(json.dumps({"out": str(out), "vocab_size": tokenizer.vocab_size,
                      "sentences": len(texts), "skipped_rows": skipped}))


def text_settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per flat key of the text sections."""
    from contrastlab.training.text_settings import TEXT_SECTIONS

    parameters = []
    for section, settings_class in TEXT_SECTIONS.items():
        for declaration in declarations(settings_class):
            if declaration.cli:
                parameters.append(_parameter(declaration.key, declaration,
                                             _section_help(declaration), TEXT_PANELS[section]))
    return parameters


def _train_text(**options: Any) -> None:
    """Train a sentence encoder with SimCSE (unsupervised: sentences through dropout;
    --supervised: pairs as positives), then optionally score it on STS pairs (--eval-data).

    Settings come from the defaults, a text recipe (--recipe), a YAML file (--config) and the
    flags, later ones winning; with --resume --out RUN, from the run's checkpoint. Prints one
    JSON object.
    """
    from contrastlab.eval.sts import evaluate_sts_run
    from contrastlab.recipes import load_text_recipe
    from contrastlab.training.text_settings import resolve_text_settings
    from contrastlab.training.text_trainer import fit_text

    config_file, recipe, eval_data = (options.pop("config"), options.pop("recipe"),
                                      options.pop("eval_data"))
    recipe_values = load_text_recipe(recipe).settings if recipe else None
    settings = resolve_text_settings(options, config_file=config_file, recipe=recipe_values,
                                     recipe_name=recipe)
    result = fit_text(settings, say=lambda text: err_console.print(text, highlight=False))
    if not result.is_main:
        return  # torchrun: rank 0 alone reports and evaluates
    exit_if_stopped("train-text", result.run_dir, result.stop_reason, result.steps)
    summary: dict[str, Any] = {"run": str(result.run_dir), "steps": result.steps,
                               "stop_reason": result.stop_reason}
    for path in (eval_data or "").split(","):
        if path.strip():
            scores = evaluate_sts_run(result.run_dir, path.strip(), settings.train.device
                                      if settings.train.device != "auto" else "cpu")
            summary[f"sts_spearman:{Path(path.strip()).name}"] = round(scores["spearman"], 2)
    print(json.dumps(summary))


def _register_train_text(app: typer.Typer) -> None:
    extra = [
        *source_parameters("Start from a text recipe (e.g. sts-simcse-cpu); --config and flags "
                           "override it."),
        inspect.Parameter("eval_data", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, Opt(
                              help="After training, STS Spearman on these scored pair files "
                              "(comma-separated).", rich_help_panel="Sources")]),
    ]
    parameters = [*extra, *text_settings_parameters()]

    def command(**options: Any) -> None:
        _train_text(**options)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = _train_text.__doc__
    app.command("train-text", cls=SectionedCommand)(command)


def eval_sts(
    run: Annotated[Path, Opt("--run", help="Run directory written by `contrastlab "
                             "train-text`.")],
    data: Annotated[str, Opt(help="Scored sentence pairs (.tsv/.csv/.jsonl; the STS "
                             "Benchmark's files as they are).")],
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    skip_bad_files: Annotated[bool, Opt(help="Leave bad rows out (counted).")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print exactly one JSON object.")] = False,
) -> None:
    """Spearman (x 100) of the cosine similarity of the run's sentence embeddings against the
    pairs' gold scores (the standard STS protocol), and Pearson beside it."""
    from contrastlab.eval.sts import evaluate_sts_run
    from contrastlab.runs.device import resolve_device

    scores = evaluate_sts_run(run, data, resolve_device(device), skip_bad_files)
    if as_json:
        print(json.dumps(scores))
        return
    for key, value in scores.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``tokenizer train``, ``train-text`` and ``eval sts`` to the application."""
    app.add_typer(tokenizer_app, name="tokenizer")
    _register_train_text(app)
    eval_app.command("sts")(eval_sts)


__all__ = ["register", "text_settings_parameters"]
