"""Recipes: tuned settings shipped with the package, by name (``--recipe NAME``).

A recipe is a YAML file in this folder: the settings (flat or nested, as a ``--config`` file)
under ``settings:``, and what it was tuned on and what it reached under ``about:``::

    about:
      summary: SimCLR on the bundled digits, the README's demo
      tuned_on: digits
      figure: kNN 86.9%, linear 98.3% (100 epochs, 2 CPU cores, ~1 min)
      command: contrastlab train --recipe digits-simclr
    settings:
      data: digits
      method: simclr
      ...

The benchmarks read the same files, so a published figure and a user's run cannot drift apart.
Settings given with the recipe (a ``--config`` file, flags, keyword arguments) override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from contrastlab.errors import ConfigError, unknown_name


@dataclass
class Recipe:
    """A named set of settings and what is known about it."""

    name: str
    settings: dict[str, Any]
    about: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return str(self.about.get("summary", ""))


def recipe_names() -> list[str]:
    """The names of the shipped recipes."""
    folder = resources.files(__name__)
    return sorted(entry.name[:-5] for entry in folder.iterdir()
                  if entry.name.endswith(".yaml"))


def load_recipe(name: str) -> Recipe:
    """The recipe ``name`` (ConfigError with the known names when there is none)."""
    if name not in recipe_names():
        raise unknown_name("recipe", name, recipe_names())
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict) or not isinstance(values.get("settings"), dict):
        raise ConfigError(f"recipe '{name}' has no settings: mapping")
    about = values.get("about") or {}
    return Recipe(name, dict(values["settings"]), dict(about))


def all_recipes() -> list[Recipe]:
    return [load_recipe(name) for name in recipe_names()]


#: the text runs' recipes (``contrastlab train-text --recipe NAME``) and the image-text runs'
#: (``contrastlab train-pairs --recipe NAME``) live in these sub-folders, apart from the image
#: recipes, whose settings are another command's
TEXT_FOLDER = "text"
PAIR_FOLDER = "pairs"


def _folder_names(folder: str) -> list[str]:
    entries = resources.files(__name__).joinpath(folder).iterdir()
    return sorted(entry.name[:-5] for entry in entries if entry.name.endswith(".yaml"))


def _load_from(folder: str, kind: str, name: str) -> Recipe:
    names = _folder_names(folder)
    if name not in names:
        raise unknown_name(kind, name, names)
    text = resources.files(__name__).joinpath(folder, f"{name}.yaml").read_text(
        encoding="utf-8")
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict) or not isinstance(values.get("settings"), dict):
        raise ConfigError(f"{kind} '{name}' has no settings: mapping")
    return Recipe(name, dict(values["settings"]), dict(values.get("about") or {}))


def text_recipe_names() -> list[str]:
    """The names of the shipped text recipes."""
    return _folder_names(TEXT_FOLDER)


def load_text_recipe(name: str) -> Recipe:
    """The text recipe ``name`` (ConfigError with the known names when there is none)."""
    return _load_from(TEXT_FOLDER, "text recipe", name)


def pair_recipe_names() -> list[str]:
    """The names of the shipped image-text recipes."""
    return _folder_names(PAIR_FOLDER)


def load_pair_recipe(name: str) -> Recipe:
    """The image-text recipe ``name`` (ConfigError with the known names when there is none)."""
    return _load_from(PAIR_FOLDER, "image-text recipe", name)


__all__ = ["Recipe", "all_recipes", "load_pair_recipe", "load_recipe", "load_text_recipe",
           "pair_recipe_names", "recipe_names", "text_recipe_names"]
