"""`contrastlab eval knn|linear|finetune|fewshot|transfer` through typer's CliRunner."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.threads import single_thread_if_small

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval_cli") / "run"
    config = build_config(None, {"data": "digits", "epochs": 1, "batch_size": 64,
                                 "backbone": "convnet-small", "projection_hidden_dim": 32,
                                 "projection_dim": 16, "out": str(out)})
    with single_thread_if_small(0):  # tiny steps: one thread is faster on a busy CPU
        train(config, console=Console(quiet=True), stop_after_step=2, evaluate_at_end=False)
    return out


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # exactly one JSON object on stdout


def test_knn_and_linear_with_label_fraction_and_features(tiny_run: Path) -> None:
    knn = run_json("eval", "knn", "--run", str(tiny_run), "--k", "10", "--label-fraction", "0.1")
    assert set(knn) == {"knn_top1", "k", "n_train", "n_test", "label_fraction"}
    assert knn["n_train"] == 144 and knn["label_fraction"] == 0.1
    linear = run_json("eval", "linear", "--run", str(tiny_run), "--features", "projector",
                      "--label-fraction", "0.01")
    assert linear["features"] == "projector" and linear["n_train"] == 14  # 1 per class minimum
    assert 0 <= linear["linear_top1"] <= 1 and "k" not in linear
    plain = run_json("eval", "knn", "--run", str(tiny_run), "--k", "10")
    assert set(plain) == {"knn_top1", "k", "n_train", "n_test"}  # defaults add no keys


def test_finetune_command(tiny_run: Path) -> None:
    scores = run_json("eval", "finetune", "--run", str(tiny_run), "--label-fraction", "0.05",
                      "--epochs", "1", "--batch-size", "32", "--lr", "0.01")
    assert {"finetune_top1", "finetune_top5", "finetune_epochs", "n_train"} <= set(scores)
    assert scores["finetune_epochs"] == 1 and scores["n_train"] == 72


def test_fewshot_command(tiny_run: Path) -> None:
    scores = run_json("eval", "fewshot", "--run", str(tiny_run), "--ways", "3", "--shots", "1,2",
                      "--episodes", "10", "--queries", "5")
    assert set(scores) == {"fewshot_3way_1shot_top1", "fewshot_3way_1shot_ci95",
                           "fewshot_3way_2shot_top1", "fewshot_3way_2shot_ci95", "ways", "shots",
                           "episodes", "queries", "n_test"}
    text = runner.invoke(app, ["eval", "fewshot", "--run", str(tiny_run), "--shots", "1",
                               "--episodes", "5"])
    assert text.exit_code == 0 and "fewshot_5way_1shot_top1: " in text.stdout


def test_transfer_command(tiny_run: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * 255 / 16).astype(np.uint8).repeat(2, 1).repeat(2, 2)
    np.savez(tmp_path / "d16.npz", x=images, y=bunch.target,
             classes=np.array([str(i) for i in range(10)]))
    scores = run_json("eval", "transfer", "--run", str(tiny_run), "--data",
                      str(tmp_path / "d16.npz"), "--probe-data", "digits", "--k", "10")
    assert {"knn_top1", "linear_top1", "cross_knn_top1", "cross_linear_top1"} <= set(scores)


@pytest.mark.parametrize(
    "args,error,message",
    [
        (["eval", "knn", "--label-fraction", "0"], ConfigError, r"--label-fraction must be in"),
        (["eval", "linear", "--label-fraction", "1.5"], ConfigError, r"\(0, 1\]"),
        (["eval", "finetune", "--label-fraction", "-1"], ConfigError, "--label-fraction"),
        (["eval", "knn", "--features", "projektor"], ConfigError, "Did you mean 'projector'"),
        (["eval", "fewshot", "--shots", "1,x"], ConfigError, "--shots"),
        (["eval", "fewshot", "--ways", "1"], ConfigError, "--ways"),
        (["eval", "fewshot", "--ways", "11", "--episodes", "2"], DataError, "need 11 classes"),
        (["eval", "finetune", "--batch-size", "1"], ConfigError, "--batch-size"),
        (["eval", "transfer", "--data", "digits", "--features", "x"], ConfigError, "features"),
    ],
)
def test_bad_input_errors(tiny_run: Path, args: list[str], error: type, message: str) -> None:
    result = runner.invoke(app, [*args, "--run", str(tiny_run)])
    assert isinstance(result.exception, error), result.output
    assert re.search(message, str(result.exception))


def test_transfer_needs_data(tiny_run: Path) -> None:
    result = runner.invoke(app, ["eval", "transfer", "--run", str(tiny_run)])
    assert result.exit_code == 2 and "--data" in result.output


def test_bad_fraction_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "contrastlab", "eval", "linear", "--run",
                             "nothing", "--label-fraction", "2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--label-fraction must be in (0, 1]" in result.stderr and result.stdout == ""


def test_every_eval_command_takes_data(tiny_run: Path, tmp_path: Path) -> None:
    """The eval commands share their options: fewshot and finetune take --data as knn and
    linear do (here another split of the same digits, so the numbers of images change)."""
    import numpy as np

    from contrastlab.data import load_dataset

    splits = load_dataset("digits")
    images = np.concatenate([splits.train.images.numpy(), splits.test.images.numpy()])[:, 0]
    labels = np.concatenate([splits.train.labels.numpy(), splits.test.labels.numpy()])
    other = tmp_path / "other.npz"
    np.savez(other, x=images[:600], y=labels[:600])
    few = run_json("eval", "fewshot", "--run", str(tiny_run), "--data", str(other),
                   "--shots", "1", "--episodes", "5", "--queries", "2")
    assert few["n_test"] == 120  # 20% of the 600
    tuned = run_json("eval", "finetune", "--run", str(tiny_run), "--data", str(other),
                     "--epochs", "1", "--batch-size", "32")
    assert tuned["n_train"] == 480 and tuned["n_test"] == 120
    for command in ("knn", "linear", "fewshot", "finetune", "transfer"):
        help_text = runner.invoke(app, ["eval", command, "--help"]).output
        assert "--data" in help_text and "--device" in help_text, command
