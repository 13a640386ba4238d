"""`--compile`: the backbone is compiled in place, so training runs, parameter names (and so
checkpoints) are those of the plain model, and the compiled backbone computes the same features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.models import build_backbone
from contrastlab.runs import load_checkpoint

QUIET = Console(quiet=True)


def tiny(tmp_path: Path, name: str, **extra: object):
    return build_config(None, {
        "data": "digits", "backbone": "convnet-small", "epochs": 1, "batch_size": 128,
        "projection_hidden_dim": 32, "projection_dim": 16, "diagnose_every": 0, "knn_k": 20,
        "device": "cpu", "out": str(tmp_path / name), **extra})


def test_compiled_backbone_gives_the_plain_features() -> None:
    torch.manual_seed(0)
    plain = build_backbone("convnet-small", 1).eval()
    compiled = build_backbone("convnet-small", 1).eval()
    compiled.load_state_dict(plain.state_dict())
    compiled.compile()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(compiled(x), plain(x), atol=1e-5)
    assert list(compiled.state_dict()) == list(plain.state_dict())


@pytest.mark.slow
def test_training_with_compile_keeps_checkpoint_names(tmp_path: Path) -> None:
    result = train(tiny(tmp_path, "compiled", compile=True), console=QUIET)
    plain = train(tiny(tmp_path, "plain"), console=QUIET)
    compiled_state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    plain_state = load_checkpoint(plain.run_dir / "checkpoints" / "last.pt")["model"]
    assert list(compiled_state) == list(plain_state)
    assert 0.0 < result.metrics["knn_top1"] <= 1.0
    assert result.metrics["step"] == plain.metrics["step"]
