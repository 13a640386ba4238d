"""Shared fixtures of the serving tests: one tiny trained run and image encoders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.serve.serve_helpers import encode_png


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SimCLR convnet-small run on the bundled digits (8x8 grey), one short epoch."""
    from rich.console import Console

    from contrastlab import train
    from contrastlab.config import build_config

    out = tmp_path_factory.mktemp("serve") / "run"
    config = build_config(None, {"data": "digits", "epochs": 1, "out": str(out),
                                 "backbone": "convnet-small", "batch_size": 256,
                                 "projection_hidden_dim": 32, "projection_dim": 16,
                                 "knn_k": 20, "device": "cpu"})
    train(config, console=Console(quiet=True), evaluate_at_end=False)
    return out


@pytest.fixture(scope="session")
def run_encoder(trained_run: Path) -> Any:
    from contrastlab.serve.encoders import encoder_from_run

    return encoder_from_run(trained_run, "backbone", "cpu")


@pytest.fixture(scope="session")
def digits_splits() -> Any:
    from contrastlab.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def png() -> Callable[..., bytes]:
    """``png(seed=0, size=8, channels=1)``: a random image encoded as PNG."""

    def make(seed: int = 0, size: int = 8, channels: int = 1) -> bytes:
        rng = np.random.default_rng(seed)
        shape = (size, size) if channels == 1 else (size, size, channels)
        return encode_png(rng.integers(0, 256, shape, dtype=np.uint8))

    return make


# ---------------------------------------------------------------------- text and image-text runs

SENTENCES = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
             "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
             "a chef cooks pasta", "people dance at a party"]
TINY_TEXT = ["--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "4", "--device",
             "cpu", "--lr", "0.01", "--log-every", "100"]


def _cli(*args: str) -> None:
    from typer.testing import CliRunner

    from contrastlab.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def text_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SimCSE Transformer run (``train-text``) on eight sentences, one epoch."""
    folder = tmp_path_factory.mktemp("text-serve")
    (folder / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    _cli("tokenizer", "train", "--data", str(folder / "sentences.txt"), "--out",
         str(folder / "tok.json"), "--vocab-size", "60", "--min-frequency", "1")
    _cli("train-text", "--data", str(folder / "sentences.txt"), "--tokenizer",
         str(folder / "tok.json"), "--out", str(folder / "run"), *TINY_TEXT)
    return folder / "run"


@pytest.fixture(scope="session")
def pair_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP run (``train-pairs``) on eight solid-colour 8x8 images with captions."""
    from tests.text.pair_data import write_folder

    folder = tmp_path_factory.mktemp("pair-serve")
    data = write_folder(folder / "colours", per_class=2)
    _cli("train-pairs", "--data", str(data), "--out", str(folder / "run"), "--vocab-size", "40",
         "--projection-dim", "8", "--threads", "1", *TINY_TEXT)
    return folder / "run"
