"""``--micro-batch`` (GradCache in the trainer): the gradients of the full batch, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.methods import METHODS, build_method
from contrastlab.runs.checkpoint import load_checkpoint
from contrastlab.training.micro_batch import check_micro_batch, grad_cache_step
from tests.threads import one_thread

GRAD_CACHE_METHODS = ["simclr", "supcon", "dcl", "dclw", "npair", "triplet", "barlow-twins",
                      "vicreg", "clip", "siglip"]


@pytest.fixture(autouse=True, scope="module")
def one_thread_here() -> Iterator[None]:
    """Tiny convolutions: a second thread on a shared CPU only adds waiting."""
    with one_thread():
        yield


def views_and_labels(n: int = 10) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    views = [torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=generator)
             for _ in range(2)]
    return views, torch.arange(n) % 3  # repeated classes: SupCon has several positives


def float64_method(name: str, train_mode: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    method = build_method(name, "convnet-small", 1, projection_dim=16).double()
    return method.train(train_mode)  # eval mode: batch norm uses running statistics


def gradients(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}


def test_the_methods_that_support_it() -> None:
    able = sorted(name for name, cls in METHODS.items() if cls.supports_grad_cache)
    assert able == sorted(GRAD_CACHE_METHODS)


@pytest.mark.parametrize("name", GRAD_CACHE_METHODS)
@pytest.mark.parametrize("micro_batch", [4, 1])
def test_gradients_equal_the_full_batch_with_eval_batch_norm(name: str, micro_batch: int) -> None:
    """Batch norm in eval mode makes every row depend on its image only: GradCache over
    micro-batches of 4, 4, 2 (or 1) gives the full batch's loss and gradients."""
    views, labels = views_and_labels()
    method = float64_method(name, train_mode=False)
    full = method(views, labels)
    full.loss.backward()
    expected = gradients(method)
    method.zero_grad(set_to_none=True)
    output = grad_cache_step(method, views, labels, micro_batch)
    got = gradients(method)
    assert got.keys() == expected.keys() and len(got) > 0
    torch.testing.assert_close(output.loss, full.loss.detach(), atol=1e-10, rtol=1e-10)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-5, msg=key)
    assert not output.loss.requires_grad
    assert output.metrics.keys() == full.metrics.keys()
    for key, value in full.metrics.items():
        assert output.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["simclr", "vicreg"])
def test_one_micro_batch_equals_the_plain_step_with_training_batch_norm(name: str) -> None:
    """A micro-batch as large as the batch sees the batch's own statistics: exact in train
    mode too (only the running statistics are updated twice)."""
    views, labels = views_and_labels()
    method = float64_method(name, train_mode=True)
    method(views, labels).loss.backward()
    expected = gradients(method)
    method.zero_grad(set_to_none=True)
    grad_cache_step(method, views, labels, micro_batch=10)
    for key, value in expected.items():
        torch.testing.assert_close(gradients(method)[key], value, atol=1e-10, rtol=1e-10)


def tiny_values(out: Path, **overrides) -> dict:
    return {"data": "digits", "epochs": 1, "batch_size": 32, "backbone": "convnet-small",
            "projection_hidden_dim": 32, "projection_dim": 16, "diagnose_every": 0,
            "out": str(out), **overrides}


def test_trainer_with_one_micro_batch_matches_the_plain_trainer(tmp_path: Path) -> None:
    """Through :func:`train` in float64: micro_batch = batch gives the plain run's parameters."""
    params = []
    for name, extra in (("plain", {}), ("cached", {"micro_batch": 32})):
        config = build_config(None, tiny_values(tmp_path / name, precision="fp64", **extra))
        train(config, console=Console(quiet=True), stop_after_step=3, evaluate_at_end=False)
        state = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]
        params.append(state)
    for key, value in params[0].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # updated once per pass: twice with GradCache
        torch.testing.assert_close(params[1][key], value, atol=1e-9, rtol=1e-9, msg=key)


def test_cli_train_with_micro_batch_finishes_with_finite_loss(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", "digits", "--epochs", "1", "--batch-size", "64",
        "--backbone", "convnet-small", "--projection-hidden-dim", "32", "--projection-dim",
        "16", "--micro-batch", "24", "--diagnose-every", "0", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    final = [r for r in records if r["type"] == "final"]
    assert final and 0.0 <= final[0]["knn_top1"] <= 1.0


@pytest.mark.parametrize("method", ["moco-v2", "byol", "swav"])
def test_refused_for_methods_without_grad_cache(tmp_path: Path, method: str) -> None:
    with pytest.raises(ConfigError, match=r"micro_batch.*'" + method + "'.*simclr"):
        build_config(None, tiny_values(tmp_path, method=method, micro_batch=8))


@pytest.mark.parametrize(("value", "message"), [
    (0, "micro_batch must be >= 1"),
    (-3, "micro_batch must be >= 1"),
    (33, "micro_batch 33 is larger than batch_size 32"),
    ("many", "micro_batch .* must be of type int"),
    (2.5, "micro_batch .* must be of type int"),
])
def test_invalid_micro_batch_refused(tmp_path: Path, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(None, tiny_values(tmp_path, micro_batch=value))


def test_cli_flag_reaches_the_configuration_check(tmp_path: Path) -> None:
    """The flag is validated before any compute (``main`` turns the error into exit code 2)."""
    result = CliRunner().invoke(app, ["train", "--method", "byol", "--micro-batch", "8",
                                      "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, ConfigError)
    assert "micro_batch" in str(result.exception) and "simclr" in str(result.exception)
    assert not (tmp_path / "run").exists()


def test_trainer_checks_the_batch_of_each_process() -> None:
    check_micro_batch(8, 16, world_size=2)  # torchrun: every process splits its own rows
    with pytest.raises(ConfigError, match="larger than the batch"):
        check_micro_batch(12, 8, world_size=2)
    with pytest.raises(ConfigError, match="larger than the batch"):
        check_micro_batch(20, 16, world_size=1)
    check_micro_batch(16, 16, world_size=1)
