"""Streaming an image folder without shards: trained file by file, the held-out split left out,
resumed exactly; ``--stream auto`` streams a folder only when it would not fit in memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from contrastlab import train
from contrastlab.data import folder_stream, load_dataset
from contrastlab.data.folder_stream import folder_catalog
from contrastlab.runs import load_checkpoint
from tests.training.stream_helpers import one_thread, stream_config  # noqa: F401

SETTINGS = {"backbone": "convnet-small", "epochs": 2, "batch_size": 8,
            "projection_hidden_dim": 32, "projection_dim": 16, "log_every": 1, "seed": 5,
            "device": "cpu", "diagnose_every": 0, "shuffle_buffer": 16, "loader_workers": 0}


def config(data: str, out: Path, **overrides):  # noqa: ANN003, ANN201
    return stream_config(SETTINGS, data, out, **overrides)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two class folders of 20 random 8x8 RGB PNGs."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i in range(20):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def _data_record(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["type"] == "data")


def test_the_catalog_is_the_in_memory_reader_s_training_images(folder: Path) -> None:
    stream = folder_catalog(str(folder))
    assert stream.test is None and stream.shards.classes == ["cat", "dog"]
    assert stream.catalog.files and len(stream.catalog) == 40
    assert stream.catalog.label.tolist() == [0] * 20 + [1] * 20
    assert [p.name for p in stream.catalog.shards[:2]] == ["00.png", "01.png"]
    assert stream.catalog.sample_name(0) == str(folder / "cat" / "00.png")


def test_streamed_folder_trains_on_the_training_split_and_resumes_exactly(
        folder: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    result = train(config(str(folder), straight, stream="on"), console=Console(quiet=True),
                   evaluate_at_end=False)
    data = _data_record(straight)
    in_memory = load_dataset(str(folder), test_fraction=0.2, split_seed=0)
    assert data["streamed"] and data["n_train"] == len(in_memory.train) == 32
    assert result.global_step == 8  # 32 // 8 per epoch, 2 epochs
    resumed = tmp_path / "resumed"
    train(config(str(folder), resumed, stream="on", loader_workers=2),
          console=Console(quiet=True), stop_after_step=6, evaluate_at_end=False)
    saved = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 2)
    train(config(str(folder), resumed, stream="on", resume=True), console=Console(quiet=True),
          evaluate_at_end=False)
    want = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    got = load_checkpoint(resumed / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(got[key], want[key]) for key in want)


def test_auto_streams_a_folder_only_when_memory_is_short(folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    train(config(str(folder), tmp_path / "fits", epochs=1), console=Console(quiet=True),
          evaluate_at_end=False)
    assert not _data_record(tmp_path / "fits")["streamed"]
    monkeypatch.setattr(folder_stream, "available_memory", lambda: 10_000)
    console = Console(record=True, width=200)
    train(config(str(folder), tmp_path / "short", epochs=1), console=console)
    assert _data_record(tmp_path / "short")["streamed"]
    assert "streaming them from the folder" in console.export_text()
    records = [json.loads(line) for line in
               (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in records if r["type"] == "final")  # evaluated on the held-out 8
    assert 0.0 <= final["knn_top1"] <= 1.0 and final["n_test"] == 8
