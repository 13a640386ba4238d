"""Resuming a text or image-text run (``train-text --resume``, ``train-pairs --resume``).

As ``contrastlab train --resume --out RUN`` does for image runs: the run's own settings (those of
its checkpoint) are the base, and options given with ``--resume`` may change only how long it
runs and the machinery (:data:`CHANGEABLE_ON_RESUME`); any other value that differs from the
run's is refused naming the setting and both values, since it would make it another run. A
folder without a checkpoint, or with one written before these runs could resume (weights only,
no training state), is refused too.

What a checkpoint holds besides the weights and the optimiser(s) (see the trainers) is common to
both loops: the loop's position (:class:`~contrastlab.training.small_loop.LoopPosition`), every
global random state (dropout, token drop: :func:`contrastlab.runs.checkpoint.capture_rng_state`)
and the number of training examples (a data file that changed between the two halves is
refused). The batch order needs no state: epoch e's order is drawn from (seed, e).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.runs.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from contrastlab.runs.directory import RunDirectory
from contrastlab.training.small_loop import LoopPosition
from contrastlab.training.text_settings import SectionTable, flat_keys

#: settings a resumed run may change (flat keys): how long it runs and the machinery
CHANGEABLE_ON_RESUME = frozenset({"resume", "out", "epochs", "time_budget", "device",
                                  "threads", "log_every", "checkpoint_every",
                                  "loader_workers"})

Built = TypeVar("Built")


def resumed_settings(sections: SectionTable, given: Mapping[str, Mapping[str, Any]],
                     build: Callable[[Mapping[str, Mapping[str, Any]]], Built],
                     kind: str, command: str) -> Built:
    """The settings of the run in ``given['train']['out']`` continued with the values ``given``
    (``{section: {field: value}}``, only those given); ``build`` makes the run's settings object
    from such a mapping (its sections have ``to_dict()``).

    Raises:
        ConfigError: no ``out``.
        CheckpointError: no checkpoint there, another kind of run's, one without training
            state, or a given value that would make it another run.
    """
    out = given.get("train", {}).get("out")
    if not out:
        raise ConfigError(f"--resume needs --out RUN: the folder of the `contrastlab {command}` "
                          "run to continue")
    state = load_resumable(Path(out), kind, command)
    saved: dict[str, dict[str, Any]] = {name: dict(values)
                                        for name, values in state["settings"].items()}
    merged = {name: {**saved.get(name, {}), **given.get(name, {})} for name in sections}
    merged["train"]["resume"] = True
    before, after = build(saved), build(merged)
    keys = {(section, name): key for key, (section, name) in flat_keys(sections).items()}
    for section in sections:
        old, new = getattr(before, section).to_dict(), getattr(after, section).to_dict()
        for name in new:
            key = keys.get((section, name), name)
            if key in CHANGEABLE_ON_RESUME or old.get(name) == new[name]:
                continue
            raise CheckpointError(
                f"cannot resume '{out}': it was trained with {key}={old.get(name)!r} but this "
                f"run asks for {key}={new[name]!r}. Resuming takes the run's own settings: leave "
                f"out --{key.replace('_', '-')} (or give the same value), or start a new run "
                "with another --out")
    return after


def new_or_resumed_settings(sections: SectionTable, merged: Mapping[str, Mapping[str, Any]],
                            build: Callable[[Mapping[str, Mapping[str, Any]]], Built],
                            kind: str, command: str, no_data: str) -> Built:
    """The settings of a new run made from the layered values ``merged``, or, with ``resume``,
    those of the run in ``out`` continued (:func:`resumed_settings`).

    Raises:
        ConfigError: a new run without data (``no_data`` says what to give), or no ``out``.
        CheckpointError: as :func:`resumed_settings`.
    """
    if merged["train"].get("resume"):
        return resumed_settings(sections, merged, build, kind, command)
    settings = build(merged)
    if not settings.train.data:  # type: ignore[attr-defined]
        raise ConfigError(f"no training data: {no_data}")
    return settings


def load_resumable(out: Path, kind: str, command: str) -> dict[str, Any]:
    """The checkpoint of the run in ``out``, checked to hold the training state of a ``kind``
    run.

    Raises:
        CheckpointError: none, another kind's, or one without training state.
    """
    path = RunDirectory(out).checkpoint_path
    if not path.is_file():
        raise CheckpointError(f"--resume given but '{path}' does not exist; drop --resume to "
                              "start a new run")
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("kind") != kind:
        raise CheckpointError(f"cannot resume '{out}': its checkpoint is not one of a "
                              f"`contrastlab {command}` run")
    if "rng" not in state or "batch_in_epoch" not in state.get("position", {}):
        raise CheckpointError(f"cannot resume '{out}': its checkpoint holds the weights only "
                              "(written before these runs could resume); start a new run")
    return state


def training_state(position: LoopPosition, examples: int) -> dict[str, Any]:
    """The checkpoint entries common to both loops: position, random states, example count."""
    from contrastlab.runs.checkpoint import capture_rng_state

    return {"position": position.to_dict(), "rng": capture_rng_state(), "examples": examples}


def check_examples(state: dict[str, Any], examples: int, out: Path) -> None:
    """Refuse data that now hold another number of examples (before anything is written).

    Raises:
        CheckpointError: naming both counts.
    """
    if int(state["examples"]) != examples:
        raise CheckpointError(f"cannot resume '{out}': the run trained on {state['examples']} "
                              f"examples but its data now hold {examples}; the data files "
                              "changed (restore them, or start a new run)")


def restore_training_state(state: dict[str, Any]) -> LoopPosition:
    """Restore the global random states; the position to continue from."""
    from contrastlab.runs.checkpoint import restore_rng_state

    restore_rng_state(state["rng"])
    return LoopPosition.from_dict(state["position"])


__all__ = ["CHANGEABLE_ON_RESUME", "check_examples", "load_resumable", "restore_training_state",
           "resumed_settings", "training_state"]
