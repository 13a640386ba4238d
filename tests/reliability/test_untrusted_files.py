"""A checkpoint or artefact crafted to run code when unpickled is refused with a CheckpointError,
and the code does not run (the file it would create does not appear)."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.errors import CheckpointError
from contrastlab.runs import CHECKPOINT_FORMAT, load_checkpoint
from contrastlab.serve.encoders import encoder_from_artefact


class CreatesFile:
    """Unpickling this object would run ``touch MARKER`` (the classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path, how: str) -> Path:
    """A file that looks like a contrastlab checkpoint but carries an exploit."""
    state = {"format": CHECKPOINT_FORMAT, "model": {"weight": torch.zeros(2)},
             "model_meta": {"method": "simclr"}, "config": {}, "epoch": CreatesFile(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch.save":  # the zip format torch.save writes
        torch.save(state, path)
    elif how == "pickle":  # a bare pickle, as older torch versions wrote
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:  # a bare pickle of today's default protocol (torch's reader stops at its framing)
        path.write_bytes(pickle.dumps(state))
    return path


def test_the_exploit_is_real(tmp_path: Path) -> None:
    """Control: unpickled without restriction, the file does run code."""
    path = malicious_checkpoint(tmp_path / "last.pt", tmp_path / "pwned", "pickle")
    pickle.loads(path.read_bytes())  # noqa: S301 - the point of this control
    assert (tmp_path / "pwned").exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle", "pickle-default-protocol"])
def test_load_checkpoint_refuses_a_malicious_pickle(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "last.pt", marker, how)
    with pytest.raises(CheckpointError) as error, warnings.catch_warnings():
        warnings.simplefilter("error")  # and no torch warning on the way
        load_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert message.startswith(f"refused to load checkpoint '{path}'") and "\n" not in message
    assert "refused for safety" in message and "weights_only" not in message
    assert f"'{os.system.__module__}.system'" in message  # names the forbidden global
    assert "truncated" not in message


@pytest.mark.parametrize("command", [["eval", "knn"], ["eval", "linear"]])
def test_eval_commands_refuse_a_malicious_checkpoint(tmp_path: Path, command: list[str]) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    malicious_checkpoint(run / "checkpoints" / "last.pt", marker, "torch.save")
    result = CliRunner().invoke(app, [*command, "--run", str(run)])
    assert isinstance(result.exception, CheckpointError), result.output
    assert "refused for safety" in str(result.exception)
    assert not marker.exists()


def test_report_leaves_out_the_model_of_a_malicious_checkpoint(tmp_path: Path) -> None:
    """`contrastlab report` reads the records without the model; the model sections are left out
    with the reason."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    malicious_checkpoint(run / "checkpoints" / "last.pt", marker, "torch.save")
    (run / "metrics.jsonl").write_text("")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "refused for safety" in (run / "report" / "report.html").read_text()
    assert not marker.exists()


def test_resume_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    malicious_checkpoint(out / "checkpoints" / "last.pt", marker, "torch.save")
    config = build_config(None, {"data": "digits", "backbone": "convnet-small", "out": str(out),
                                 "resume": True, "projection_hidden_dim": 8})
    with pytest.raises(CheckpointError, match="refused for safety"):
        train(config, console=Console(quiet=True))
    assert not marker.exists()


def test_artefact_loader_refuses_a_pickle_posing_as_torchscript(tmp_path: Path) -> None:
    """TorchScript archives are zip files like torch.save's; torch.jit.load does not unpickle
    arbitrary objects from one (docs/serving.md: load only artefacts you made)."""
    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "encoder.torchscript.pt", marker, "torch.save")
    with pytest.raises(CheckpointError, match="not a readable TorchScript archive"):
        encoder_from_artefact(path)
    assert not marker.exists()
