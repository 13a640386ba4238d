"""docs/tutorial-cifar10.md runs: its ```bash blocks, in order, on a tiny CIFAR-like folder.

The commands are the page's own, with these changes for a test that takes about a minute:
- `pip install` is left out (the test runs in the installed package) and the tarball is not
  extracted: a folder of the same layout (10 classes, 16 training and 6 test images of 32x32
  colour each, coloured by class) is made instead;
- every training run gets a budget of a second or two (`--time-budget N` becomes 1, runs on the
  recipe's own 10 minutes get `--time-budget 1`), and new runs get `--batch-size 32` (the
  recipe's 128 is close to the tiny training split's 160 images);
- the int8 export skips the parity check (`--no-parity`: on 60 test images of a model trained
  for a second, one image is 1.7 kNN points);
- the service listens on a free port instead of 8000.
Every command must exit with 0; the similarity answers must be JSON with a cosine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[2] / "docs" / "tutorial-cifar10.md"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def tiny_cifar(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 6)):
        for index, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array([(index * 37) % 256, (index * 91) % 256, (index * 53) % 256])
            for i in range(count):
                noise = rng.integers(-40, 40, (32, 32, 3))
                image = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:04d}.jpg", quality=90)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tutorial_script(port: int) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "the tutorial has no bash blocks"
    lines = []
    for line in "\n".join(blocks).splitlines():
        if line.startswith("pip install") or "tar xzf" in line:
            continue
        line = re.sub(r"--time-budget \d+", "--time-budget 1", line)
        if line.startswith("contrastlab train") and "--time-budget" not in line:
            line += " --time-budget 1"  # the recipe's own budget is 10 minutes
        if line.startswith("contrastlab train") and "--resume" not in line:
            line += " --batch-size 32"
        if line.startswith("contrastlab train --resume"):
            line = line.replace("--time-budget 1", "--time-budget 2")
        if line.startswith("contrastlab export") and "--int8" in line:
            line += " --no-parity"
        lines.append(line.replace("8000", str(port)))
    return "\n".join(lines)


@pytest.mark.slow
def test_the_tutorial_runs_at_tiny_size(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the tutorial calls the service with curl, which is not installed")
    tiny_cifar(tmp_path / "data" / "cifar10")
    script = "set -euo pipefail\n" + tutorial_script(free_port())
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "120"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    answers = [json.loads(line) for line in result.stdout.splitlines()
               if line.startswith('{"cosine"')]  # one answer a line: curl -w '\n'
    assert len(answers) == 2 and all(-1.0 <= a["cosine"] <= 1.0 for a in answers)
    assert (tmp_path / "runs" / "cifar" / "report" / "report.html").is_file()
    assert (tmp_path / "runs" / "cifar" / "export" / "encoder.int8.onnx").is_file()
