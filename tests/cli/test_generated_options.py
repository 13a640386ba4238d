"""The ``train`` command's options are generated from the settings' declarations: every setting
is a flag, its help says the default and where it comes from, and ``--help`` shows every option
name in full at 80 columns."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.config import flat_keys, method_users
from contrastlab.methods import METHODS
from contrastlab.settings import declarations


def help_text(columns: int = 80) -> str:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": str(columns)},
                                terminal_width=columns)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_setting_is_an_option_shown_in_full_at_80_columns() -> None:
    text = help_text(80)
    assert "…" not in text
    shown = set(re.findall(r"--([a-z0-9][a-z0-9-]*)", text))
    for key in flat_keys():
        assert key.replace("_", "-") in shown, key
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_is_grouped_by_section_and_names_every_backbone_family() -> None:
    text = help_text(100)
    for section in ("Data", "Views", "Backbone", "Method", "Optimizer", "Schedule",
                    "Evaluation", "Run"):
        assert f"{section} options:" in text
    assert "vit-" in text and "convnet" in text and "resnet" in text


def test_method_settings_show_each_methods_default() -> None:
    text = " ".join(help_text(200).split())
    assert "simclr 0.5" in text and "moco-v2 0.2" in text  # --temperature's defaults


def test_a_setting_has_one_type_across_methods() -> None:
    """A flag serves every method that has the setting, so they must agree on its type."""
    for name, users in method_users().items():
        types = {next(d.value_type for d in declarations(METHODS[m].Settings) if d.name == name)
                 for m in users}
        assert len(types) == 1, (name, types)


def test_a_new_method_setting_is_a_flag_without_touching_the_cli(monkeypatch) -> None:
    """What 'one field in one file' means: a field added to a method's settings dataclass is
    accepted by build_config and offered by the CLI."""
    from dataclasses import dataclass

    from contrastlab.config import build_config, flat_keys
    from contrastlab.methods.simclr import SimCLRSettings
    from contrastlab.settings import setting

    @dataclass
    class Extended(SimCLRSettings):
        label_smoothing: float = setting(0.0, "A new knob.", source="here", ge=0, le=1)

    monkeypatch.setattr(METHODS["simclr"], "Settings", Extended)
    for cached in (method_users, flat_keys):
        cached.cache_clear()
    try:
        config = build_config(None, {"label_smoothing": 0.1, "out": "unused"})
        assert config.method.label_smoothing == 0.1
        from contrastlab.cli_settings import settings_parameters

        assert "label_smoothing" in {p.name for p in settings_parameters()}
    finally:
        monkeypatch.undo()
        for cached in (method_users, flat_keys):
            cached.cache_clear()
