"""The command line on tiny data, run in a real subprocess like a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--data", "digits", "--backbone", "convnet-small", "--epochs", "1", "--batch-size", "64",
        "--projection-hidden-dim", "32", "--knn-k", "20"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    result = cli("train", *TINY, "--out", "run", cwd=root)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"run", "knn_top1", "linear_top1"}
    return root / "run"


def test_train_then_eval_json(trained_run: Path) -> None:
    result = cli("eval", "knn", "--run", str(trained_run), "--k", "20", "--json",
                 cwd=trained_run.parent)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert set(payload) == {"knn_top1", "k", "n_train", "n_test"}
    assert payload["k"] == 20 and payload["n_train"] + payload["n_test"] == 1797
    final = json.loads((trained_run / "final_metrics.json").read_text())
    assert payload["knn_top1"] == pytest.approx(final["knn_top1"], abs=1e-6)

    result = cli("eval", "linear", "--run", str(trained_run), "--json", cwd=trained_run.parent)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert 0 <= payload["linear_top1"] <= 1 and "knn_top1" not in payload


def test_config_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("temprature: 0.2\n")
    result = cli("train", "--config", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Did you mean 'temperature'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--temperature", "-0.1"], "temperature must be > 0"),
        (["--batch-size", "1"], "batch_size must be >= 2"),
        (["--method", "simclrr"], "unknown method 'simclrr'"),
        (["--method", "simcse"], "train-text"),
        (["--backbone", "vgg"], "unknown backbone 'vgg'"),
        (["--data", "no/such/folder"], "no/such/folder"),
    ],
)
def test_bad_values_rejected_before_compute(tmp_path: Path, args: list[str], message: str) -> None:
    result = cli("train", *args, "--out", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("contrastlab ")
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "train" in result.stdout and "eval" in result.stdout


def test_eval_missing_run(tmp_path: Path) -> None:
    result = cli("eval", "knn", "--run", "nothing", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr
