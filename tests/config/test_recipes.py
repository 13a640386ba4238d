"""Every shipped recipe is a valid configuration, says what it was tuned on and what it reached,
and is listed by `contrastlab recipes`; flags and files override a recipe."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.recipes import all_recipes, load_recipe, recipe_names


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_is_valid_and_documented(name: str) -> None:
    recipe = load_recipe(name)
    assert {"summary", "tuned_on", "figure", "command"} <= set(recipe.about), name
    config = build_config(None, {"out": "unused"}, recipe=recipe.settings, recipe_name=name)
    assert config.method.name == recipe.settings.get("method", "simclr")


def test_flags_override_a_recipe() -> None:
    recipe = load_recipe("mnist-simclr")
    config = build_config(None, {"temperature": 0.3, "out": "unused"}, recipe=recipe.settings,
                          recipe_name="mnist-simclr")
    assert config.method.temperature == 0.3
    assert config.backbone.name == "convnet-small-x256"  # the rest from the recipe


def test_recipes_command_lists_them_all() -> None:
    result = CliRunner().invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [entry["name"] for entry in listed] == recipe_names()
    shown = CliRunner().invoke(app, ["recipes", "mnist-simclr"])
    assert "temperature: 2.0" in shown.stdout and "tuned_on" in shown.stdout


def test_an_unknown_recipe_suggests_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'mnist-simcl'.*mnist-simclr"):
        load_recipe("mnist-simcl")
    assert len(all_recipes()) == len(recipe_names())
