"""The one-call Python API: ``contrastlab.train(...)`` and ``contrastlab.load(run)``.

The keyword arguments of :func:`train` are the command line's options with underscores
(``batch_size=256`` is ``--batch-size 256``), so a command and a script say the same thing::

    import contrastlab

    result = contrastlab.train(data="digits", method="simclr", epochs=5, out="runs/demo")
    print(result.metrics["knn_top1"], result.metrics["linear_top1"])
    encoder = contrastlab.load("runs/demo")
    embeddings = encoder.embed(images)          # uint8 (N, C, H, W) -> float32 (N, D)

Any ``nn.Module`` with an integer ``output_dim`` can be the backbone (``backbone=module``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from contrastlab.config import TrainConfig, build_config, flatten, load_yaml, method_users
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.eval.callbacks import EvaluationCallback
from contrastlab.eval.diagnostics_callback import DiagnosticsCallback
from contrastlab.runs import LoadedRun, RunDirectory, default_run_name, load_checkpoint, load_run
from contrastlab.training import (
    Callback,
    ProgressCallback,
    Trainer,
    TrainResult,
    make_loggers,
)


def standard_callbacks(config: TrainConfig, evaluate_at_end: bool = True) -> list[Callback]:
    """Evaluation, diagnostics with the collapse alarm, the progress bar and the loggers of
    ``--log-to``, in that order."""
    return [
        EvaluationCallback(config.eval.eval_every,
                           at_end=evaluate_at_end and config.eval.eval_at_end),
        DiagnosticsCallback(config.eval.diagnose_every),
        ProgressCallback(),
        *make_loggers(config.run.loggers),
    ]


def fit(config: TrainConfig, *, console: Console | None = None,
        callbacks: Sequence[Callback] | None = None, backbone: nn.Module | None = None,
        stop_after_step: int | None = None, evaluate_at_end: bool = True) -> TrainResult:
    """Train a checked configuration with the standard callbacks (plus ``callbacks``)."""
    everything = [*standard_callbacks(config, evaluate_at_end), *(callbacks or [])]
    return Trainer(config, callbacks=everything, console=console, backbone=backbone,
                   stop_after_step=stop_after_step).fit()


def resolve_config(
    settings: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    recipe: str | None = None,
) -> TrainConfig:
    """The configuration of a run: defaults < recipe < ``config_file`` < ``settings`` (flat keys,
    ``None`` meaning "not given"). With ``resume``, the run in ``out`` supplies the base
    settings: given values must agree with them on what makes a run the same run (method, data,
    batch, seed, method and view settings, ...) and may change the rest (epochs, budget,
    evaluation, device; :func:`changeable_on_resume`)."""
    recipe_values = None
    if recipe is not None:
        from contrastlab.recipes import load_recipe

        recipe_values = load_recipe(recipe).settings
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    file_values = load_yaml(config_file) if config_file is not None else {}
    resume = bool(given.get("resume", flatten(file_values).get("resume", False)))
    if not resume:
        config = build_config(config_file, given, recipe=recipe_values, recipe_name=recipe)
        if "out" not in given and "out" not in flatten(file_values):
            config = config.replace(run=config.run.replace(
                out=default_run_name(config.method.name, config.data.source)))
        return config
    out = given.get("out", flatten(file_values).get("out"))
    if out is None:
        raise ConfigError("--resume needs --out RUN: the run folder to continue")
    saved = saved_settings(Path(out))
    config = TrainConfig.from_layers([
        (saved, f"the run's saved settings ({out})"),
        *([(recipe_values, f"recipe '{recipe}'")] if recipe_values is not None else []),
        *([(file_values, f"config file '{config_file}'")] if config_file is not None else []),
        (given, "configuration"),
    ])
    asked = config.flat()
    for key, value in saved.items():
        if value is None and key in method_users():  # runs of before the sections: the default
            continue
        if key in asked and key not in changeable_on_resume() and value != _plain(asked[key]):
            raise CheckpointError(
                f"cannot resume '{out}': it was trained with {key}={saved[key]!r} but this run "
                f"asks for {key}={asked[key]!r}. Resuming takes the run's own settings: leave "
                f"out --{key.replace('_', '-')} (or give the same value), or start a new run "
                "with another --out"
            )
    return config


def changeable_on_resume() -> set[str]:
    """Settings a resumed run may change: how long it runs, evaluation and the machinery (not
    the seed). Everything else makes it another run."""
    from contrastlab.config import EvalSettings, RunSettings
    from contrastlab.settings import declarations

    keys = {"epochs", "time_budget", "micro_batch"}
    keys |= {d.key for d in declarations(EvalSettings)}
    keys |= {d.key for d in declarations(RunSettings)} - {"seed"}
    return keys


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def saved_settings(run: Path) -> dict[str, Any]:
    """A run's settings by flat key, from its last checkpoint (or config.yaml)."""
    directory = RunDirectory(run)
    if directory.checkpoint_path.is_file():
        saved = load_checkpoint(directory.checkpoint_path).get("config")
    elif directory.config_path.is_file():
        saved = load_yaml(directory.config_path)
    else:
        raise CheckpointError(
            f"--resume given but '{directory.checkpoint_path}' does not exist; drop --resume to "
            "start a new run"
        )
    if not isinstance(saved, dict):
        raise CheckpointError(f"'{directory.checkpoint_path}' holds no settings to resume from")
    flat = flatten(saved)
    flat.pop("resume", None)
    return flat


def train(
    config: TrainConfig | None = None,
    /,
    *,
    recipe: str | None = None,
    config_file: str | Path | None = None,
    backbone: str | nn.Module | None = None,
    callbacks: Sequence[Callback] | None = None,
    console: Console | None = None,
    stop_after_step: int | None = None,
    evaluate_at_end: bool = True,
    **settings: Any,
) -> TrainResult:
    """Train an encoder and evaluate it; everything lands in the run folder (``out``).

    Args:
        config: a complete :class:`TrainConfig` (then no other settings may be given).
        recipe: a named recipe (``contrastlab recipes``) to start from.
        config_file: a YAML file of settings (flat or nested).
        backbone: a registered backbone's name (as ``--backbone``), or an ``nn.Module`` to
            train instead; a module needs an integer ``output_dim``, and
            ``contrastlab.load(run, backbone=...)`` needs it again.
        callbacks: extra :class:`~contrastlab.training.Callback` objects.
        console: where progress and messages go.
        stop_after_step: stop (with a checkpoint) after this global step.
        evaluate_at_end: kNN and linear probe on the held-out split at the end.
        **settings: any setting by its flat name, e.g. ``data="digits"``, ``method="byol"``,
            ``epochs=5``, ``temperature=0.2``, ``out="runs/demo"``.

    Returns:
        :class:`~contrastlab.training.TrainResult` (``metrics`` holds the final scores).
    """
    module = backbone if isinstance(backbone, nn.Module) else None
    if backbone is not None and module is None:
        settings["backbone"] = backbone
    if config is None:
        config = resolve_config(settings, config_file=config_file, recipe=recipe)
    elif settings or recipe is not None or config_file is not None:
        raise ConfigError("give either a TrainConfig or settings (recipe, config_file, "
                          "keywords), not both")
    return fit(config, console=console, callbacks=callbacks, backbone=module,
               stop_after_step=stop_after_step, evaluate_at_end=evaluate_at_end)


def load(run: str | Path, device: str | torch.device = "cpu",
         backbone: nn.Module | None = None) -> LoadedRun:
    """The encoder of a run, in eval mode: ``.embed(uint8 images)`` gives its embeddings,
    ``.method`` is the trained method (``.method.backbone`` the encoder itself)."""
    from contrastlab.runs import resolve_device

    return load_run(run, resolve_device(str(device)), backbone)


__all__ = ["fit", "load", "resolve_config", "saved_settings", "standard_callbacks", "train"]
