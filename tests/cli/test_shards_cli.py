"""`contrastlab shards build` as typed: one JSON line, the shards and their index, and one red
line (exit 2) for an output folder that is in use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "1000"}
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_shards_build_writes_shards_and_refuses_a_used_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.jpg")
    out = tmp_path / "shards"
    done = cli("shards", "build", "--data", str(tmp_path / "photos"), "--out", str(out),
               "--shard-size", "8KB", "--max-side", "16")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["samples"] == 6 and summary["shards"] >= 2 and summary["skipped"] == 0
    index = json.loads((out / "shards.json").read_text())
    assert index["classes"] == ["a", "b"] and index["max_side"] == 16
    again = cli("shards", "build", "--data", str(tmp_path / "photos"), "--out", str(out))
    assert again.returncode == 2
    message = " ".join(again.stderr.split())  # the console wraps long lines
    assert "already exists and is not an empty folder; pass --force" in message
