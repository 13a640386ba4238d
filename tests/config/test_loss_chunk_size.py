"""The ``loss_chunk_size`` key: validated, passed to SimCLR, reaching ``nt_xent(chunk_size=)``."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.losses import nt_xent
from contrastlab.methods import build_method


def test_key_is_validated_and_reaches_simclr(tmp_path) -> None:
    config = build_config(None, {"method": "simclr", "loss_chunk_size": 48,
                                 "out": str(tmp_path / "run")})
    assert config.method.to_dict()["loss_chunk_size"] == 48
    assert build_config(None, {"out": str(tmp_path / "run")}).method.loss_chunk_size is None
    with pytest.raises(ConfigError, match="loss_chunk_size must be >= 1"):
        build_config(None, {"loss_chunk_size": 0, "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="loss_chunk_size"):
        build_config(None, {"loss_chunk_size": "many", "out": str(tmp_path / "run")})


def test_simclr_step_uses_the_tiled_loss_with_the_same_value(monkeypatch) -> None:
    torch.manual_seed(0)
    method = build_method("simclr", "convnet-small", 1, loss_chunk_size=5,
                          projection_hidden_dim=16)
    views = [torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)]
    calls = []
    import contrastlab.losses.info_nce as info_nce

    original = info_nce.tiled_nt_xent
    monkeypatch.setattr(info_nce, "tiled_nt_xent",
                        lambda *a, **k: calls.append(k["chunk_size"]) or original(*a, **k))
    loss = method.training_step(views).loss
    assert calls == [5]
    with torch.no_grad():
        z = method.project(torch.cat(views))
    torch.testing.assert_close(loss.detach(), nt_xent(z[:6], z[6:], method.temperature))
    with pytest.raises(ConfigError, match="chunk_size"):
        build_method("simclr", "convnet-small", 1, loss_chunk_size=-3)


def test_cli_flag() -> None:
    result = CliRunner().invoke(app, ["train", "--loss-chunk-size", "0", "--out", "unused"])
    assert isinstance(result.exception, ConfigError)
    assert "loss_chunk_size must be >= 1" in str(result.exception)
