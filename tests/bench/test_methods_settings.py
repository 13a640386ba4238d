"""bench/methods.py: every method's settings on every benchmark form a valid configuration.

A typo in METHOD_SETTINGS or DATA_METHOD_SETTINGS (a key the method does not take, a value out
of range) would otherwise show only as an error row after a long benchmark run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from contrastlab.config import TrainConfig, build_config
from contrastlab.methods import list_methods

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench_methods():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("methods")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("data", ["mnist", "fashion-mnist"])
def test_every_method_has_valid_settings(bench_methods, data: str, tmp_path: Path) -> None:
    assert set(bench_methods.METHOD_SETTINGS) == set(list_methods())
    for method in list_methods():
        settings = bench_methods.settings_for(method, data)
        values = {key.replace("-", "_"): value for key, value in settings.items()}
        config = build_config(None, {**values, "method": method, "out": str(tmp_path)})
        assert isinstance(config, TrainConfig)


def test_fashion_supcon_uses_one_view_at_its_temperature(bench_methods) -> None:
    fashion = bench_methods.settings_for("supcon", "fashion-mnist")
    assert (fashion["num-views"], fashion["temperature"]) == ("1", "0.2")
    mnist = bench_methods.settings_for("supcon", "mnist")
    assert "num-views" not in mnist and mnist["temperature"] == "0.1"


def _flags(command: list[str]) -> dict[str, str]:
    """``--key value`` pairs of a command line after ``train`` (flags without a value -> "")."""
    flags, rest = {}, command[command.index("train") + 1:]
    i = 0
    while i < len(rest):
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            flags[rest[i]], i = rest[i + 1], i + 2
        else:
            flags[rest[i]], i = "", i + 1
    return flags


def test_train_command_with_epochs_overrides_and_data_path(bench_methods, tmp_path: Path) -> None:
    overrides = bench_methods.parse_overrides(["crop-scale=0.2,1", "--lr=1e-2"])
    assert overrides == {"crop-scale": "0.2,1", "lr": "1e-2"}
    command = bench_methods.train_command(
        "supcon", "fashion-mnist", tmp_path / "run", epochs=17, device="cuda", seed=3,
        precision="bf16", overrides=overrides, data_path="/copy/fashion-mnist")
    flags = _flags(command)
    assert flags["--epochs"] == "17" and "--time-budget" not in flags
    assert (flags["--data"], flags["--device"], flags["--seed"]) == ("/copy/fashion-mnist",
                                                                    "cuda", "3")
    # the override wins, the benchmark's other settings stay
    assert (flags["--crop-scale"], flags["--lr"]) == ("0.2,1", "1e-2")
    assert (flags["--num-views"], flags["--temperature"], flags["--backbone"]) == (
        "1", "0.2", "convnet-x256")
    assert flags["--precision"] == "bf16" and "--compile" not in flags


def test_train_command_with_budget_reads_the_benchmark_data(bench_methods,
                                                            tmp_path: Path) -> None:
    flags = _flags(bench_methods.train_command("supervised", "fashion-mnist", tmp_path / "run",
                                               budget=900.0, compile_backbone=True))
    assert flags["--time-budget"] == "900.0" and "--epochs" not in flags
    assert flags["--data"] == "fashion-mnist" and flags["--compile"] == ""


def test_train_command_needs_exactly_one_length(bench_methods, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        bench_methods.train_command("supcon", "mnist", tmp_path, budget=10.0, epochs=1)
    with pytest.raises(ValueError, match="exactly one"):
        bench_methods.train_command("supcon", "mnist", tmp_path)


@pytest.mark.parametrize("pair", ["crop-scale", "=3", "lr="])
def test_bad_override_names_the_pair(bench_methods, pair: str) -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench_methods.parse_overrides([pair])
