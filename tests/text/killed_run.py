"""A real ``contrastlab train-text`` / ``train-pairs`` process killed with SIGKILL mid-run: the
text and image-text resume tests' shared start, wait and kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from contrastlab.runs.checkpoint import SLOW_CHECKPOINT_VARIABLE, load_checkpoint


def kill_after_checkpoint(command: str, values: dict[str, Any], out: Path,
                          step: int = 2) -> int:
    """Run ``contrastlab COMMAND`` with ``values`` as flags into ``out`` (one thread, every
    checkpoint write paused 0.3 s before its rename, so a kill can land inside one), SIGKILL it
    once a checkpoint of step >= ``step`` exists; returns the step of the checkpoint left."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in values.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "contrastlab", command, *flags, "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             SLOW_CHECKPOINT_VARIABLE: "0.3"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not (last.is_file() and load_checkpoint(last)["position"]["step"] >= step):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.communicate()
    return int(load_checkpoint(last)["position"]["step"])
