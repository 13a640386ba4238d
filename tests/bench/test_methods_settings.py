"""bench/methods.py: every method's settings on every benchmark form a valid configuration.

A typo in METHOD_SETTINGS or DATA_METHOD_SETTINGS (a key the method does not take, a value out
of range) would otherwise show only as an error row after a long benchmark run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from contrastlab.config import TrainConfig, _coerce_all, build_config
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
        config = build_config(None, {**_coerce_all(values, f"bench settings of {method}"),
                                     "method": method, "out": str(tmp_path)})
        assert isinstance(config, TrainConfig)


def test_fashion_supcon_uses_one_view_at_its_temperature(bench_methods) -> None:
    fashion = bench_methods.settings_for("supcon", "fashion-mnist")
    assert (fashion["num-views"], fashion["temperature"]) == ("1", "0.2")
    mnist = bench_methods.settings_for("supcon", "mnist")
    assert "num-views" not in mnist and mnist["temperature"] == "0.1"
