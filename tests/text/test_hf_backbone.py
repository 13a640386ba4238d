"""``train-text --text-backbone hf:PATH``: a local Hugging Face model folder as the text encoder.

The tiny BERT and its tokenizer are built here (tests/text/hf_model.py); nothing is downloaded.
The run's embeddings are checked against the same model's outputs computed with transformers
alone and pooled by hand, before and after SimCSE steps, and the run is reloaded without the
model folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")

from contrastlab.cli import app  # noqa: E402
from contrastlab.errors import ConfigError  # noqa: E402
from contrastlab.runs.checkpoint import load_checkpoint  # noqa: E402
from contrastlab.runs.hf_folder import load_folder  # noqa: E402
from contrastlab.runs.text_run import load_text_run  # noqa: E402
from contrastlab.training.text_settings import resolve_text_settings  # noqa: E402
from tests.text.hf_model import SENTENCES, direct_embeddings, write_tiny_bert  # noqa: E402

TINY = ["--batch-size", "4", "--device", "cpu", "--log-every", "1", "--lr", "1e-3",
        "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf-text")
    (root / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    rows = [f"{a}\t{b}\t{5.0 if a == b else (i + j) % 5}" for i, a in enumerate(SENTENCES[:5])
            for j, b in enumerate(SENTENCES[:5])]
    (root / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return root


def cli(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def backbone_weights(run: Path) -> dict[str, torch.Tensor]:
    """The HF model's state dict as the run's checkpoint holds it."""
    prefix = "backbone.model."
    return {k[len(prefix):]: v for k, v in load_checkpoint(
        run / "checkpoints" / "last.pt")["model"].items() if k.startswith(prefix)}


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_epochs_0_embeds_as_the_pretrained_model(folder: Path, corpus: Path, tmp_path: Path,
                                                 pool: str) -> None:
    out = tmp_path / "run"
    summary = cli("train-text", "--data", str(corpus / "sentences.txt"), "--text-backbone",
                  f"hf:{folder}", "--epochs", "0", "--pool", pool, "--out", str(out), *TINY)
    assert summary["steps"] == 0
    loaded = load_text_run(out)
    assert not loaded.encoder.training and loaded.encoder.output_dim == 32
    torch.testing.assert_close(loaded.embed(SENTENCES, batch_size=3),
                               direct_embeddings(folder, SENTENCES, pool=pool),
                               atol=1e-5, rtol=1e-5)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["hf_source"]["path"] == str(folder.resolve())
    assert record["hf_source"]["model_type"] == "bert"
    assert len(record["hf_source"]["config_sha256"]) == 64


def test_simcse_steps_then_reload_without_the_folder(folder: Path, corpus: Path,
                                                     tmp_path: Path) -> None:
    copy = shutil.copytree(folder, tmp_path / "model")
    out = tmp_path / "run"
    summary = cli("train-text", "--data", str(corpus / "sentences.txt"), "--text-backbone",
                  f"hf:{copy}", "--epochs", "2", "--out", str(out), *TINY,
                  "--eval-data", str(corpus / "pairs.tsv"))
    assert summary["steps"] == 4  # 10 sentences, batches of 4, 2 epochs
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "step"]
    assert len(losses) == 4 and all(loss == loss for loss in losses)
    trained = backbone_weights(out)
    from transformers import AutoModel

    start = AutoModel.from_pretrained(copy, local_files_only=True).state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the steps moved it
    direct = direct_embeddings(copy, SENTENCES, state=trained)
    shutil.rmtree(copy)  # the run folder alone must rebuild the encoder
    first = load_text_run(out).embed(SENTENCES)
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(load_text_run(out).embed(SENTENCES), first, atol=0, rtol=0)
    scores = cli("eval", "sts", "--run", str(out), "--data", str(corpus / "pairs.tsv"),
                 "--device", "cpu", "--json")
    assert scores["pairs"] == 25
    assert scores["spearman"] == pytest.approx(summary["sts_spearman:pairs.tsv"], abs=0.01)


def test_dropout_is_the_models_own_and_max_length_is_capped(folder: Path) -> None:
    encoder, tokenizer, _ = load_folder(folder, "mean", max_length=1000)
    assert encoder.max_length == 64  # the tiny BERT's max_position_embeddings
    tokens = tokenizer.encode(SENTENCES[:2], 4)
    assert tokens.ids.shape == (2, 4) and tokens.ids[0, -1] == tokenizer.tokenizer.sep_token_id
    encoder.train()
    assert not torch.equal(encoder(tokens.ids, tokens.mask), encoder(tokens.ids, tokens.mask))
    encoder.eval()
    torch.testing.assert_close(encoder(tokens.ids, tokens.mask),
                               encoder(tokens.ids, tokens.mask), atol=0, rtol=0)


def _broken(folder: Path, tmp_path: Path, drop: tuple[str, ...] = (),
            config: dict | None = None) -> Path:
    broken = shutil.copytree(folder, tmp_path / "broken")
    for name in drop:
        (broken / name).unlink()
    if config is not None:
        values = json.loads((broken / "config.json").read_text())
        values.update(config)
        (broken / "config.json").write_text(json.dumps(values))
    return broken


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("no-config", "has no config.json"),
    ("unknown-type", "cannot load the model type 'bertzz'"),
    ("no-tokenizer", "holds no tokenizer files"),
    ("no-weights", "holds no weights"),
    ("remote-code", "does not run code from model folders"),
])
def test_bad_folders_are_named_with_what_to_do(folder: Path, tmp_path: Path, case: str,
                                               expected: str) -> None:
    path = {
        "missing": lambda: tmp_path / "nowhere",
        "no-config": lambda: _broken(folder, tmp_path, drop=("config.json",)),
        "unknown-type": lambda: _broken(folder, tmp_path, config={"model_type": "bertzz"}),
        "no-tokenizer": lambda: _broken(folder, tmp_path,
                                        drop=("tokenizer.json", "tokenizer_config.json")),
        "no-weights": lambda: _broken(folder, tmp_path, drop=("model.safetensors",)),
        "remote-code": lambda: _broken(folder, tmp_path,
                                       config={"auto_map": {"AutoModel": "x.Model"}}),
    }[case]()
    with pytest.raises(ConfigError, match=expected) as error:
        load_folder(path)
    assert str(path) in str(error.value)


def test_settings_mistakes(folder: Path, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no folder"):
        resolve_text_settings({"data": "x.txt", "text_backbone": "hf:"})
    with pytest.raises(ConfigError, match="leave --tokenizer out"):
        resolve_text_settings({"data": "x.txt", "text_backbone": f"hf:{folder}",
                               "tokenizer": "tok.json"})
    with pytest.raises(ConfigError, match="unknown text_backbone 'ngram'.*'ngrams'"):
        resolve_text_settings({"data": "x.txt", "text_backbone": "ngram"})
    result = CliRunner().invoke(app, ["train-text", "--data", str(corpus / "sentences.txt"),
                                      "--text-backbone", f"hf:{tmp_path / 'nowhere'}",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


def test_a_tokenizer_without_a_pad_token_is_padded_by_hand(folder: Path) -> None:
    from transformers import AutoTokenizer

    from contrastlab.data.hf_tokenizer import HfTokenizer

    raw = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = ["a chef cooks pasta", "two dogs run in a park on the beach", ""]
    padded = HfTokenizer(raw).encode(texts, 10)
    raw.pad_token = None  # as GPT-2's: transformers itself would refuse to pad
    by_hand = HfTokenizer(raw).encode(texts, 10)
    assert torch.equal(by_hand.mask, padded.mask) and not padded.mask.all()
    assert torch.equal(by_hand.ids[by_hand.mask], padded.ids[padded.mask])
