"""``train-text --resume`` and ``train-pairs --resume``: a run stopped (after N steps, or killed
with SIGKILL mid-run) and resumed ends with the same weights, optimiser state and step records,
bit for bit, as a run never interrupted (CPU, one thread, tiny models, a tiny local Hugging Face
BERT among them, with dropout, token drop and image augmentations drawing random numbers);
settings that would change the run, a folder without a checkpoint, a weights-only checkpoint and
changed data are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.data.tokenizer import train_tokenizer
from contrastlab.errors import CheckpointError
from contrastlab.runs.checkpoint import load_checkpoint, save_atomic
from contrastlab.runs.text_run import load_text_run
from contrastlab.training.pair_settings import resolve_pair_settings
from contrastlab.training.pair_trainer import fit_pairs
from contrastlab.training.text_settings import resolve_text_settings
from contrastlab.training.text_trainer import fit_text
from tests.text.hf_model import write_tiny_bert
from tests.text.killed_run import kill_after_checkpoint
from tests.text.pair_data import COLOURS, write_folder
from tests.threads import one_thread

WORDS = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
         "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
         "a chef cooks pasta", "people dance at a party"]
TRANSFORMER = {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.1, "token_drop": 0.2,
               "batch_size": 4, "epochs": 3, "lr": 0.01, "log_every": 1,
               "device": "cpu"}
NGRAMS = {"text_backbone": "ngrams", "buckets": 512, "dim": 8, "dropout": 0.1,
          "token_drop": 0.3, "batch_size": 2, "epochs": 3, "lr": 0.05, "log_every": 1,
          "device": "cpu", "checkpoint_every": 1}
PAIRS = {"backbone": "convnet-small", "dim": 16, "depth": 1, "heads": 2, "projection_dim": 8,
         "batch_size": 4, "epochs": 2, "lr": 0.01, "log_every": 1,
         "device": "cpu", "method": "siglip"}


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sentences.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def text_run(values: dict[str, Any], stop_after_step: int | None = None) -> dict[str, Any]:
    with one_thread():
        result = fit_text(resolve_text_settings(values), stop_after_step=stop_after_step)
    return load_checkpoint(result.run_dir / "checkpoints" / "last.pt")


def steps(out: Path) -> list[tuple[int, float]]:
    """(step, loss) of every complete step record (a record cut by a kill is left out)."""
    lines = (out / "metrics.jsonl").read_text().split("\n")[:-1]
    found = {}
    for line in lines:
        record = json.loads(line) if line else {}
        if record.get("type") == "step":
            found[record["step"]] = record["loss"]
    return sorted(found.items())


def assert_same_tensors(got: Any, want: Any, where: str = "") -> None:
    """Equal nested dicts / lists whose tensors are equal bit for bit."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_tensors(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_tensors(a, b, f"{where}/{i}")
    elif isinstance(want, torch.Tensor):
        assert torch.equal(got, want), f"differs from the uninterrupted run at {where}"
    else:
        assert got == want, where


def test_transformer_run_stopped_mid_epoch_resumes_exactly(sentences: Path,
                                                           tmp_path: Path) -> None:
    # one tokenizer for both runs: training one orders its vocabulary differently each time
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(train_tokenizer(WORDS, vocab_size=60, min_frequency=1).to_json())
    values = {**TRANSFORMER, "data": str(sentences), "tokenizer": str(tokenizer)}
    straight = text_run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "stopped"
    stopped = text_run({**values, "out": str(out)}, stop_after_step=3)  # epoch 1, batch 1 of 2
    assert (stopped["position"]["epoch"], stopped["position"]["batch_in_epoch"]) == (1, 1)
    resumed = text_run({"resume": True, "out": str(out)})  # the run's own settings
    assert resumed["position"]["step"] == 6
    for key in ("model", "optimizer"):
        assert_same_tensors(resumed[key], straight[key], key)
    assert steps(out) == steps(tmp_path / "straight")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    straight_records = [json.loads(line) for line in
                        (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]

    def epochs(found: list[dict]) -> list[tuple]:  # an epoch's mean loss spans the stop
        return [(r["epoch"], r["step"], r["loss"]) for r in found if r["type"] == "epoch"]

    assert epochs(records) == epochs(straight_records) and len(epochs(records)) == 3
    assert [r["type"] for r in records].count("final") == 1


def test_hf_run_stopped_mid_epoch_resumes_exactly_without_its_folder(sentences: Path,
                                                                     tmp_path: Path) -> None:
    """A tiny BERT (``hf:``, its own dropout 0.1, AdamW) stopped after 3 steps and resumed with
    the model folder gone: the encoder and tokenizer are rebuilt from the checkpoint's
    ``hf_files`` and its weights. An ``--epochs 0`` run continued for 2 epochs is the same run
    too (its checkpoint holds the training state of step 0)."""
    pytest.importorskip("transformers")
    folder = write_tiny_bert(tmp_path / "tiny-bert")
    values = {"text_backbone": f"hf:{folder}", "data": str(sentences), "batch_size": 4,
              "epochs": 2, "lr": 1e-3, "log_every": 1, "device": "cpu"}
    straight = text_run({**values, "out": str(tmp_path / "straight")})
    out, zero = tmp_path / "stopped", tmp_path / "zero"
    stopped = text_run({**values, "out": str(out)}, stop_after_step=3)  # epoch 1, batch 1 of 2
    assert (stopped["position"]["epoch"], stopped["position"]["batch_in_epoch"]) == (1, 1)
    loaded = text_run({**values, "out": str(zero), "epochs": 0})
    assert loaded["position"]["step"] == 0 and "rng" in loaded and "hf_files" in loaded
    shutil.rmtree(folder)  # the resumed runs must not need the model folder
    resumed = text_run({"resume": True, "out": str(out)})
    continued = text_run({"resume": True, "out": str(zero), "epochs": 2})
    assert resumed["position"]["step"] == continued["position"]["step"] == 4
    assert set(resumed["hf_files"]) >= {"config.json", "tokenizer.json"}
    assert resumed["hf_source"] == straight["hf_source"]
    assert "exp_avg" in resumed["optimizer"]["state"][0]  # AdamW's moments, resumed too
    for run in (resumed, continued):
        for key in ("model", "optimizer", "hf_files"):
            assert_same_tensors(run[key], straight[key], key)
    assert steps(out) == steps(zero) == steps(tmp_path / "straight")
    assert len(steps(out)) == 4


@pytest.mark.slow
def test_ngram_run_killed_mid_run_resumes_exactly(sentences: Path, tmp_path: Path) -> None:
    """A real ``train-text`` process, checkpointing after every step (each write paused 0.3 s
    before its rename), is killed with SIGKILL once a checkpoint of step >= 2 exists."""
    values = {**NGRAMS, "data": str(sentences)}
    straight = text_run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "killed"
    assert kill_after_checkpoint("train-text", values, out) < 12, "the run had ended"
    last = out / "checkpoints" / "last.pt"

    resumed = text_run({"resume": True, "out": str(out)})
    assert not list(last.parent.glob("*.tmp"))  # the write the kill cut short was cleaned up
    assert_same_tensors(resumed["model"], straight["model"], "model")
    assert_same_tensors(resumed["ngram_table"], straight["ngram_table"], "ngram_table")
    assert_same_tensors(resumed["optimizer"], straight["optimizer"], "optimizer")
    assert steps(out) == steps(tmp_path / "straight")
    assert resumed["ngram_table"]["values"].shape[0] < 512  # the touched rows only
    table = load_text_run(out).encoder.table.weight
    assert torch.equal(table[resumed["ngram_table"]["rows"]], resumed["ngram_table"]["values"])


def test_pair_run_stopped_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "colours", per_class=3)  # 12 pairs: 3 steps an epoch
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(train_tokenizer([f"a {c} square" for c in COLOURS], vocab_size=40,
                                         min_frequency=1).to_json())
    values = {**PAIRS, "data": str(data), "tokenizer": str(tokenizer)}

    def pair_run(values: dict[str, Any], stop_after_step: int | None = None) -> dict:
        with one_thread():
            result = fit_pairs(resolve_pair_settings(values), stop_after_step=stop_after_step)
        return load_checkpoint(result.run_dir / "checkpoints" / "last.pt")

    straight = pair_run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "stopped"
    pair_run({**values, "out": str(out), "checkpoint_every": 2}, stop_after_step=4)
    resumed = pair_run({"resume": True, "out": str(out)})
    assert resumed["position"]["step"] == 6
    assert {"loss.log_temperature", "loss.bias"} <= set(resumed["model"])  # t', b
    for key in ("model", "optimizer", "view_generator"):
        assert_same_tensors(resumed[key], straight[key], key)
    assert steps(out) == steps(tmp_path / "straight")


def test_resume_refuses_changes_and_missing_runs(sentences: Path, tmp_path: Path) -> None:
    out, data = tmp_path / "run", tmp_path / "sentences.txt"
    data.write_text(sentences.read_text())
    values = {**NGRAMS, "data": str(data), "out": str(out), "checkpoint_every": 0}
    text_run(values, stop_after_step=1)
    with pytest.raises(CheckpointError, match=r"trained with lr=0.05 but this run asks for "
                                              r"lr=0.1.*leave out --lr"):
        resolve_text_settings({"resume": True, "out": str(out), "lr": 0.1})
    with pytest.raises(CheckpointError, match="token_drop=0.3 but this run asks for"):
        resolve_text_settings({"resume": True, "out": str(out), "token_drop": 0.5})
    longer = resolve_text_settings({**values, "resume": True, "epochs": 5,
                                    "checkpoint_every": 3})
    assert longer.train.epochs == 5 and longer.ngrams.buckets == 512
    result = CliRunner().invoke(app, ["train-text", "--resume", "--out", str(tmp_path / "no")])
    assert "--resume given but" in str(result.exception)
    assert "does not exist; drop --resume" in str(result.exception)
    result = CliRunner().invoke(app, ["train-pairs", "--resume", "--out", str(out)])
    assert "not one of a `contrastlab train-pairs` run" in str(result.exception)
    weights_only = tmp_path / "old"  # a checkpoint of before: settings and weights only
    (weights_only / "checkpoints").mkdir(parents=True)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    save_atomic({key: state[key] for key in ("format", "kind", "settings", "model")},
                weights_only / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="holds the weights only"):
        resolve_text_settings({"resume": True, "out": str(weights_only)})
    written = [(out / name).read_bytes() for name in ("metrics.jsonl", "config.yaml",
                                                      "checkpoints/last.pt")]
    data.write_text("\n".join(WORDS[:6]) + "\n")  # the data changed
    with pytest.raises(CheckpointError, match="trained on 8 examples but its data now hold 6"):
        text_run({"resume": True, "out": str(out)})
    assert written == [(out / name).read_bytes() for name in ("metrics.jsonl", "config.yaml",
                                                              "checkpoints/last.pt")]
