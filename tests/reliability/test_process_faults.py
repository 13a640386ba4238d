"""A real `contrastlab train` process killed or signalled: nothing beyond the steps since the last
checkpoint is lost, and resuming gives exactly the parameters of an uninterrupted run.

Every run is tiny (digits with half of it held out: 14 steps of 64 images per epoch, 2 epochs,
convnet-small, small heads, deterministic, CPU, one thread). The uninterrupted reference runs
and the resumptions run in this process; the runs that are killed or signalled are real
subprocesses of ``python -m contrastlab train``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.errors import CheckpointError
from contrastlab.runs import load_checkpoint
from contrastlab.runs.checkpoint import SLOW_CHECKPOINT_VARIABLE

QUIET = Console(quiet=True)
EPOCHS = 2
COMMON: dict[str, Any] = {
    "data": "digits", "test_fraction": 0.5, "backbone": "convnet-small", "epochs": EPOCHS,
    "batch_size": 64, "log_every": 1, "knn_k": 20, "deterministic": True, "device": "cpu",
    "diagnose_every": 0, "seed": 3, "projection_hidden_dim": 32, "projection_dim": 16,
}
#: the state each method carries besides its weights: none, a queue, an EMA teacher, a centre
METHODS: dict[str, dict[str, Any]] = {
    "simclr": {},
    "moco-v2": {"queue_size": 128},
    "byol": {"prediction_hidden_dim": 32},
    "dino": {"num_prototypes": 64, "num_local_crops": 2},
}
#: a process that does not reach the awaited point within this many seconds fails the test
PATIENCE = 300.0

Records = list[dict[str, Any]]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Train in this process as the subprocesses do (one thread); restore the global settings."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def write_config(folder: Path, method: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump({**COMMON, "method": method, **METHODS[method]}))
    return path


def train_here(config: Path, out: Path, resume: bool = False) -> dict[str, torch.Tensor]:
    """Train (or resume) in this process; return the final parameters and buffers."""
    with one_thread():
        train(build_config(config, {"out": str(out), "resume": resume or None}), console=QUIET,
              evaluate_at_end=False)
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    different = [key for key in want if not torch.equal(got[key], want[key])]
    assert not different, f"differ from the uninterrupted run: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """``reference(method)``: the final state of an uninterrupted run (computed once)."""
    cache: dict[str, dict[str, torch.Tensor]] = {}
    folder = tmp_path_factory.mktemp("straight")

    def get(method: str) -> dict[str, torch.Tensor]:
        if method not in cache:
            cache[method] = train_here(write_config(folder, method), folder / method)
        return cache[method]

    return get


def start(config: Path, out: Path, *flags: str, env: dict[str, str] | None = None
          ) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items()
                   if key != SLOW_CHECKPOINT_VARIABLE}
    environment.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "1000",
                        **(env or {})})
    command = [sys.executable, "-m", "contrastlab", "train", "--config", str(config),
               "--out", str(out), *flags]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def records(out: Path) -> Records:
    """The complete records of metrics.jsonl (a line still being written is left out)."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # the part after the last newline is unfinished
    return [json.loads(line) for line in lines if line]


def wait_until(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not ready():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            pytest.fail(f"the training process ended (exit {process.returncode}) before the "
                        f"awaited point:\n{stdout}\n{stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the training process did not reach the awaited point in time")
        time.sleep(0.005)


def steps_of_epoch(out: Path, epoch: int) -> list[int]:
    return [r["step"] for r in records(out) if r["type"] == "step" and r["epoch"] == epoch]


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sigkill_mid_epoch_then_resume_is_exact(method: str, reference, tmp_path: Path) -> None:
    config, out = write_config(tmp_path, method), tmp_path / "run"
    process = start(config, out)
    # a step of the second epoch is logged only after the first epoch's checkpoint is written
    wait_until(process, lambda: len(steps_of_epoch(out, 1)) >= 1)
    kill(process)
    state = load_checkpoint(out / "checkpoints" / "last.pt")  # intact and loadable
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    lost = steps_of_epoch(out, 1)
    assert lost and max(lost) < 2 * state["global_step"], "killed after the second epoch ended"
    assert_identical(train_here(config, out, resume=True), reference(method))


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_previous(reference, tmp_path: Path) -> None:
    config, out = write_config(tmp_path, "simclr"), tmp_path / "run"
    folder = out / "checkpoints"
    # every checkpoint write pauses 2 s between the complete temporary file and the rename
    process = start(config, out, env={SLOW_CHECKPOINT_VARIABLE: "2"})

    def pausing_before_the_second_rename() -> bool:
        if not any(r["type"] == "epoch" and r["epoch"] == EPOCHS for r in records(out)):
            return False
        for temporary in folder.glob(".last.pt.*.tmp"):
            with contextlib.suppress(CheckpointError):  # still being written
                return load_checkpoint(temporary)["epoch"] == EPOCHS
        return False

    wait_until(process, pausing_before_the_second_rename)
    kill(process)
    stale = list(folder.glob(".last.pt.*.tmp"))
    assert len(stale) == 1
    state = load_checkpoint(folder / "last.pt")  # the previous checkpoint, intact
    assert (state["epoch"], state["batch_in_epoch"]) == (EPOCHS - 1, 0)
    assert load_checkpoint(stale[0])["epoch"] == EPOCHS  # complete, but never renamed

    resumed = start(config, out, "--resume")
    stdout, stderr = resumed.communicate(timeout=PATIENCE)
    assert resumed.returncode == 0, stderr
    assert "knn_top1" in json.loads(stdout.strip().splitlines()[-1])
    assert not list(folder.glob("*.tmp")), "the stale temporary file was not cleaned up"
    assert_identical(load_checkpoint(folder / "last.pt")["model"], reference("simclr"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "exit_code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_finishes_the_step_checkpoints_and_says_how_to_resume(
    name: str, exit_code: int, reference, tmp_path: Path
) -> None:
    config, out = write_config(tmp_path, "simclr"), tmp_path / "run"
    process = start(config, out)
    wait_until(process, lambda: len(steps_of_epoch(out, 0)) >= 2)
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode == exit_code, stderr
    message = " ".join(stderr.split())
    match = re.search(rf"{name} received: finished step (\d+) and wrote the checkpoint", message)
    assert match, message
    assert f"Continue with: contrastlab train --resume --out {out}" in message
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["global_step"] == int(match.group(1)) == max(steps_of_epoch(out, 0))
    assert state["epoch"] == 0 and 0 < state["batch_in_epoch"]  # stopped mid-epoch
    assert_identical(train_here(config, out, resume=True), reference("simclr"))
