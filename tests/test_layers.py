"""The rule of the layers, read from the source: each package imports only packages of lower
layers (every import counts, also those inside functions; docs/architecture.md draws them).

A failure names the module, the import and the layers, e.g. ``training/trainer.py imports
contrastlab.eval (layer 6) but training is in layer 5``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "contrastlab"

#: lowest first; a package may import its own modules and those of lower layers only
LAYERS: list[set[str]] = [
    {"errors"},
    {"settings", "distributed", "phases", "atomic"},
    {"data", "views", "losses", "models", "optim", "recipes"},
    {"methods"},
    {"config"},
    {"runs"},
    {"training"},
    {"eval"},
    {"report", "serve"},
    {"api", "cli_settings"},
    {"cli_text", "cli_pairs"},
    {"cli"},
    {"__init__", "__main__"},
]


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"package '{package}' is in no layer: add it to LAYERS (and to "
                         "docs/architecture.md)")


def package_of(path: Path) -> str:
    parts = path.relative_to(SOURCE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """``(line, package)`` of every ``contrastlab.<package>`` the module imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "contrastlab":  # a module of the package, or __version__
                found += [(node.lineno, alias.name) for alias in node.names
                          if alias.name != "__version__"]
            elif node.module.startswith("contrastlab."):
                found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1]) for alias in node.names
                      if alias.name.startswith("contrastlab.")]
    return found


MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_each_module_imports_only_lower_layers(path: Path) -> None:
    package = package_of(path)
    own = layer_of(package)
    for line, imported in imported_packages(path):
        if imported == package:
            continue
        assert layer_of(imported) < own, (
            f"{path.relative_to(SOURCE)}:{line} imports contrastlab.{imported} (layer "
            f"{layer_of(imported)}) but {package} is in layer {own}: lower layers must not "
            "import higher or sibling ones"
        )


def test_every_package_has_a_layer() -> None:
    for path in MODULES:
        layer_of(package_of(path))


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from contrastlab.eval import knn\n")
    assert imported_packages(module) == [(2, "eval")]
    assert layer_of("eval") > layer_of("training")
