"""The ``train`` command's options, generated from the settings' declarations.

Every setting of every section (and of every method) becomes one option named by its flat key
(``temperature`` -> ``--temperature``), with the declared help, the default and where it comes
from, grouped in ``--help`` by section. Nothing here names a setting: a new field in a settings
dataclass is a new option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from contrastlab.config import SECTIONS, method_users
from contrastlab.methods import METHODS
from contrastlab.settings import Declaration, declarations

PANELS = {"data": "Data", "views": "Views", "backbone": "Backbone", "method": "Method",
          "optimizer": "Optimizer", "schedule": "Schedule", "eval": "Evaluation", "run": "Run"}


def _method_declarations() -> dict[str, list[tuple[str, Declaration]]]:
    """``{setting name: [(method, its declaration), ...]}`` over every method."""
    found: dict[str, list[tuple[str, Declaration]]] = {}
    for name in sorted(METHODS):
        for declaration in declarations(METHODS[name].Settings):
            found.setdefault(declaration.name, []).append((name, declaration))
    return found


def _option_type(declaration: Declaration) -> Any:
    """The type typer parses: pairs as text ("0.08,1"), the rest as declared; always optional,
    since an option not given means "not set here"."""
    value_type = declaration.value_type
    if getattr(value_type, "__origin__", None) is tuple:
        value_type = str
    return value_type | None


def _limits_text(declaration: Declaration) -> str:
    limits = declaration.limits
    return f" Must be {limits.describe()}." if limits.bounded and limits.choices is None else ""


def _section_help(declaration: Declaration) -> str:
    default = ("none" if declaration.default is None else declaration.describe_default())
    source = f" ({declaration.source})" if declaration.source else ""
    return f"{declaration.help}{_limits_text(declaration)} Default: {default}{source}."


def _method_help(uses: list[tuple[str, Declaration]]) -> str:
    first = uses[0][1]
    defaults = ", ".join(
        f"{method} {'none' if d.default is None else d.describe_default()}" for method, d in uses)
    return f"{first.help}{_limits_text(first)} Methods and defaults: {defaults}."


def _parameter(key: str, declaration: Declaration, help_text: str, panel: str
               ) -> inspect.Parameter:
    names = [declaration.flag]
    if declaration.value_type is bool:
        names = [f"{declaration.flag}/--no-{declaration.flag[2:]}"]
    pair = getattr(declaration.value_type, "__origin__", None) is tuple
    metavar = ("MIN,MAX" if declaration.limits.ordered else "VIEW1,VIEW2") if pair else None
    option = typer.Option(*names, help=help_text, rich_help_panel=panel, show_default=False,
                          metavar=metavar)
    annotation = Annotated[_option_type(declaration), option]
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=annotation)


def settings_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per flat key, with its typer option, section by section."""
    parameters: list[inspect.Parameter] = []
    for section, settings_class in SECTIONS.items():
        panel = PANELS[section]
        if section == "method":
            help_text = ("Method: " + ", ".join(sorted(METHODS)) + ". Default: simclr.")
            option = typer.Option("--method", help=help_text, rich_help_panel=panel,
                                  show_default=False)
            parameters.append(inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY,
                                                default=None,
                                                annotation=Annotated[str | None, option]))
            for name, uses in _method_declarations().items():
                parameters.append(_parameter(name, uses[0][1], _method_help(uses), panel))
            continue
        for declaration in declarations(settings_class):
            if declaration.cli:
                parameters.append(_parameter(declaration.key, declaration,
                                             _section_help(declaration), panel))
    missing = set(method_users()) - {p.name for p in parameters}
    if missing:
        raise RuntimeError(f"method settings without an option: {sorted(missing)}")
    return parameters


def with_settings_options(extra: list[inspect.Parameter],
                          body: Callable[..., None]) -> Callable[..., None]:
    """``body(**options)`` with a signature of ``extra`` + every setting's option, for typer."""

    def command(**options: Any) -> None:
        body(**options)

    parameters = [*extra, *settings_parameters()]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = body.__doc__
    command.__name__ = body.__name__
    return command


class SectionedCommand(TyperCommand):
    """A command whose ``--help`` lists its options section by section (the settings' sections)
    in click's plain layout, which wraps the help text and never cuts an option's name, at any
    terminal width."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super(TyperCommand, self).format_help(ctx, formatter)  # the plain (click) layout

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                name = getattr(param, "rich_help_panel", None) or "Options"
                sections.setdefault(name, []).append(record)
        for name, rows in sections.items():
            with formatter.section(f"{name} options"):
                formatter.write_dl(rows)



def source_parameters(recipe_help: str) -> list[inspect.Parameter]:
    """The ``--config FILE`` and ``--recipe NAME`` options of a training command (the "Sources"
    panel of its help); ``recipe_help`` says which recipes the command takes."""
    return [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Path | None, typer.Option(
                              help="YAML file of settings (flat or nested); flags override it.",
                              rich_help_panel="Sources")]),
        inspect.Parameter("recipe", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, typer.Option(
                              help=recipe_help, rich_help_panel="Sources")]),
    ]

def exit_if_stopped(command: str, run: Path, stop_reason: str, steps: int) -> None:
    """After a SIGINT / SIGTERM (the run checkpointed after the step in progress): say how to
    continue and exit with 128 + the signal's number."""
    if stop_reason not in ("SIGINT", "SIGTERM"):
        return
    Console(stderr=True).print(
        f"stopped by {stop_reason} after step {steps}; the checkpoint holds it. "
        f"Continue with: contrastlab {command} --resume --out {run}", highlight=False)
    raise typer.Exit(130 if stop_reason == "SIGINT" else 143)


__all__ = ["PANELS", "SectionedCommand", "exit_if_stopped", "settings_parameters",
           "source_parameters", "with_settings_options"]
