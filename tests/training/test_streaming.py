"""Training from streamed shards: a run stopped mid-epoch, or killed (SIGKILL) after a mid-epoch
checkpoint, and resumed gives bit-identical parameters (the stream's position is the batch in
the epoch), whatever the number of decoding workers, in one process and in two gloo processes.
Everything trains on one thread, as the killed subprocess does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.data.shard_build import build_shards
from contrastlab.errors import ConfigError
from contrastlab.runs import load_checkpoint
from tests.distributed.process_group import join, start_group
from tests.training.stream_helpers import one_thread, stream_config  # noqa: F401

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def shard_pattern(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Digits as shards of 40 images; the pattern names 8 of them (320 images)."""
    out = tmp_path_factory.mktemp("digits-shards")
    build_shards("digits", out, shard_bytes=40 * 2048, max_side=None)
    return str(out / "{000000..000007}.tar")


SETTINGS = {"backbone": "convnet-small", "epochs": 2, "batch_size": 32,
            "projection_hidden_dim": 32, "projection_dim": 16, "log_every": 1, "seed": 3,
            "device": "cpu", "diagnose_every": 0, "shuffle_buffer": 64, "loader_workers": 0}


def config(data: str, out: Path, **overrides):  # noqa: ANN003, ANN201
    return stream_config(SETTINGS, data, out, **overrides)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight(shard_pattern: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted streamed run (decoded in this process), trained once."""
    out = tmp_path_factory.mktemp("straight") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config(shard_pattern, out), console=QUIET)
    finally:
        torch.set_num_threads(threads)
    # the held-out 20% (the in-memory reader's split) is not trained on: 256 // 32 steps per
    # epoch, 2 epochs
    assert result.global_step == 16
    return out


def parameters(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    different = [key for key in want if not torch.equal(got[key], want[key])]
    assert not different, f"differ from the uninterrupted run: {different[:5]}"


def test_stopped_mid_epoch_then_resumed_is_exact(shard_pattern: str, straight: Path,
                                                  tmp_path: Path) -> None:
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    data = next(r for r in records if r["type"] == "data")
    assert data["streamed"] and data["n_train"] == 256
    resumed = tmp_path / "resumed"  # decoded by 2 worker processes: the same batches
    partial = train(config(shard_pattern, resumed, loader_workers=2), console=QUIET,
                    stop_after_step=13)
    assert not partial.finished
    saved = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 5)
    train(config(shard_pattern, resumed, loader_workers=1, resume=True), console=QUIET)
    assert_identical(parameters(resumed), parameters(straight))


def test_stream_on_needs_shards_and_off_decodes_them(shard_pattern: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--stream on needs WebDataset tar shards"):
        train(config("digits", tmp_path / "a", stream="on"), console=QUIET)
    result = train(config(shard_pattern, tmp_path / "b", stream="off", epochs=1), console=QUIET,
                   evaluate_at_end=False)
    assert result.global_step == 8  # 80% of 320 held in memory for training: 256 // 32
    records = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert not json.loads(records[0])["streamed"]


@pytest.mark.slow
def test_sigkill_after_a_mid_epoch_checkpoint_then_resume_is_exact(
        shard_pattern: str, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()
             if key != "loader_workers"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "1000"}
    process = subprocess.Popen(
        [sys.executable, "-m", "contrastlab", "train", *flags, "--data", shard_pattern,
         "--out", str(out), "--loader-workers", "1", "--checkpoint-every", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 300

    def last_step() -> int:
        lines = metrics.read_text().split("\n")[:-1] if metrics.is_file() else []
        steps = [json.loads(line).get("step", 0) for line in lines if line]
        return max(steps, default=0)

    while last_step() < 6:  # step 5's record is written after step 4's checkpoint
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or stalled early: {process.communicate()[1][-2000:]}")
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.communicate()
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    # a mid-epoch checkpoint (steps 4, 12), or the end of epoch 1 (step 8)
    assert saved["global_step"] >= 4
    assert saved["global_step"] % 4 == 0 or saved["batch_in_epoch"] == 0, saved["global_step"]
    train(config(shard_pattern, out, resume=True), console=QUIET)
    assert_identical(parameters(out), parameters(straight))


def _train_rank(rank: int, world: int, data: str, out: str, stop: int | None,
                resume: bool) -> None:
    torch.set_num_threads(1)
    train(config(data, Path(out), precision="fp64", resume=resume or None), console=QUIET,
          stop_after_step=stop)


@pytest.mark.slow
def test_two_processes_stopped_and_resumed_is_exact(shard_pattern: str, tmp_path: Path) -> None:
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    join(start_group(2, _train_rank, shard_pattern, straight, None, False))
    join(start_group(2, _train_rank, shard_pattern, resumed, 5, False))
    saved = load_checkpoint(Path(resumed) / "checkpoints" / "last.pt")
    assert (saved["global_step"], saved["epoch"], saved["batch_in_epoch"]) == (5, 0, 5)
    join(start_group(2, _train_rank, shard_pattern, resumed, None, True))
    assert_identical(parameters(Path(resumed)), parameters(Path(straight)))
