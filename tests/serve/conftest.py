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
