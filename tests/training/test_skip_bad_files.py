"""--skip-bad-files through the trainer: the bad file is skipped and counted in the log."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.errors import DataError


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"this is not a png")
    return root


def test_bad_file_named_or_skipped_and_counted(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "images")
    values = {"data": str(data), "backbone": "convnet-small", "epochs": 1, "batch_size": 8,
              "projection_hidden_dim": 16, "knn_k": 5, "out": str(tmp_path / "run")}
    with pytest.raises(DataError, match="broken.png"):
        train(build_config(None, values), console=Console(quiet=True))
    values["out"] = str(tmp_path / "run2")
    train(build_config(None, {**values, "skip_bad_files": True}), console=Console(quiet=True))
    lines = (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    data_record = next(r for r in records if r["type"] == "data")
    assert data_record["skipped_files"] == 1
    assert data_record["n_train"] + data_record["n_test"] == 40
