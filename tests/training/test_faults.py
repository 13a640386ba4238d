"""Faults during training: non-finite steps skipped and counted, a stop after too many in a row,
checkpoint copies kept, a failed checkpoint write leaving the previous one intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.methods.simclr import SimCLR
from contrastlab.runs import load_checkpoint

QUIET = Console(quiet=True)


def tiny(out: Path, **overrides):
    values = {"data": "digits", "backbone": "convnet-small", "epochs": 2, "batch_size": 64,
              "out": str(out), "projection_hidden_dim": 32, "projection_dim": 16, "log_every": 1,
              "knn_k": 20, "seed": 1}
    values.update(overrides)
    return build_config(None, values)


def inject_nan(monkeypatch: pytest.MonkeyPatch, bad_steps: set[int], where: str) -> None:
    """Make SimCLR's loss (or only its gradients) NaN at the given global steps."""
    original = SimCLR.training_step

    def faulty(self, views, labels=None):
        output = original(self, views, labels)
        if self.step in bad_steps:
            if where == "loss":
                output.loss = output.loss * float("nan")
            else:  # finite loss, NaN gradient
                weight = next(self.projection_head.parameters())
                output.loss = output.loss + (weight * float("nan")).sum() * 0.0
        return output

    monkeypatch.setattr(SimCLR, "training_step", faulty)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path, monkeypatch, where: str) -> None:
    inject_nan(monkeypatch, {3, 4, 9}, where)
    result = train(tiny(tmp_path / "run"), console=QUIET, evaluate_at_end=False)
    assert result.finished and result.skipped_steps == 3
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]
    assert sorted(r["step"] for r in records if r["type"] == "skipped_step") == [3, 4, 9]
    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())


def test_training_stops_after_too_many_non_finite_steps_in_a_row(tmp_path: Path,
                                                                 monkeypatch) -> None:
    # digits: 1437 training images / batch 64 = 22 steps per epoch, so last.pt holds epoch 1
    inject_nan(monkeypatch, set(range(25, 100)), "loss")
    with pytest.raises(FloatingPointError) as error:
        train(tiny(tmp_path / "run", max_nonfinite_steps=4), console=QUIET)
    message = str(error.value)
    assert "4 steps in a row" in message and "the last at step 28" in message
    assert "last.pt" in message and "--lr" in message and "--precision fp32" in message
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and state["global_step"] == 22
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_keep_and_best_checkpoints(tmp_path: Path) -> None:
    train(tiny(tmp_path / "run", epochs=4, keep=2, eval_every=1), console=QUIET,
          evaluate_at_end=False)
    folder = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".pt")
    assert names == ["best.pt", "epoch-2.pt", "epoch-4.pt", "last.pt"]
    assert load_checkpoint(folder / "epoch-2.pt")["epoch"] == 2
    best = load_checkpoint(folder / "best.pt")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]
    knn = {r["epoch"]: r["knn_top1"] for r in records if r["type"] == "eval"}
    assert best["best_score"] == max(knn.values())
    assert knn[best["epoch"]] == max(knn.values())


def test_full_disk_on_a_real_file_system_keeps_the_checkpoint_and_says_so(tmp_path: Path) -> None:
    """The issue's case: a run on a small file system, then the disk fills up, then --resume.
    torch raises its own RuntimeError ('[enforce fail at inline_container.cc] ... unexpected
    pos'); the user sees one line naming the file and the cause, the previous checkpoint is
    intact and no temporary file is left."""
    import os

    from contrastlab.errors import WriteError
    from tests.serve.serve_helpers import small_filesystem

    with small_filesystem(tmp_path / "small", size="4m") as folder:
        out = folder / "run"
        train(tiny(out, epochs=1), console=QUIET, evaluate_at_end=False)
        last = out / "checkpoints" / "last.pt"
        before = last.read_bytes()
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        (folder / "filler").write_bytes(b"\0" * max(0, free - 64 * 1024))  # the disk fills up
        with pytest.raises(WriteError) as error:
            train(tiny(out, epochs=2, resume=True), console=QUIET)
        message = str(error.value)
        assert f"could not write checkpoint '{last}' (No space left on device)" in message
        assert "the previous file there is intact" in message
        assert f"continue with --resume --out {out}" in message and "\n" not in message
        assert last.read_bytes() == before
        assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
        assert load_checkpoint(last)["epoch"] == 1
