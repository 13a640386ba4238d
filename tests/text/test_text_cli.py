"""The text commands end to end on tiny data: tokenizer train, train-text (unsupervised and
supervised with hard negatives), eval sts; mistakes as one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.recipes import load_text_recipe, text_recipe_names
from contrastlab.runs.text_run import load_text_run
from contrastlab.training.text_settings import resolve_text_settings

WORDS = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
         "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
         "a chef cooks pasta", "people dance at a party"]
TINY = ["--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "4", "--device", "cpu",
        "--log-every", "1", "--lr", "0.01"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    (folder / "sentences.txt").write_text("\n".join(WORDS) + "\n")
    rows = [f"{a}\t{b}\t{5.0 if a == b else 1.0}" for a in WORDS[:4] for b in WORDS[:4]]
    (folder / "pairs.tsv").write_text("\n".join(rows) + "\n")
    triples = [{"sentence1": w, "sentence2": w + " .", "negative": WORDS[(i + 1) % 8]}
               for i, w in enumerate(WORDS)]
    (folder / "triples.jsonl").write_text("\n".join(json.dumps(t) for t in triples) + "\n")
    return folder


def run(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tokenizer_train_then_unsupervised_run_then_eval(corpus: Path, tmp_path: Path) -> None:
    made = run("tokenizer", "train", "--data", str(corpus / "sentences.txt"), "--out",
               str(tmp_path / "tok.json"), "--vocab-size", "60", "--min-frequency", "1")
    assert made["sentences"] == 8 and (tmp_path / "tok.json").is_file()
    out = tmp_path / "run"
    summary = run("train-text", "--data", str(corpus / "sentences.txt"), "--tokenizer",
                  str(tmp_path / "tok.json"), "--out", str(out), "--epochs", "2", *TINY,
                  "--eval-data", str(corpus / "pairs.tsv"))
    assert summary["steps"] == 4 and "sts_spearman:pairs.tsv" in summary
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records][0] == "data" and records[-1]["type"] == "final"
    scores = run("eval", "sts", "--run", str(out), "--data", str(corpus / "pairs.tsv"),
                 "--device", "cpu", "--json")
    assert scores["pairs"] == 16
    assert scores["spearman"] == pytest.approx(summary["sts_spearman:pairs.tsv"], abs=0.01)
    loaded = load_text_run(out)
    assert not loaded.encoder.training
    torch.testing.assert_close(loaded.embed(WORDS[:2]), loaded.embed(WORDS[:2]))


def test_supervised_with_hard_negatives(corpus: Path, tmp_path: Path) -> None:
    summary = run("train-text", "--data", str(corpus / "triples.jsonl"), "--supervised",
                  "--out", str(tmp_path / "sup"), *TINY)
    assert summary["steps"] == 2
    data = json.loads((tmp_path / "sup" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["groups"] == 3 and data["examples"] == 8


NGRAMS = ["--text-backbone", "ngrams", "--buckets", "512", "--dim", "16", "--batch-size", "4",
          "--device", "cpu", "--log-every", "1", "--lr", "0.01"]


def test_ngram_runs_unsupervised_and_cosent_then_eval(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ngrams"
    summary = run("train-text", "--data", str(corpus / "sentences.txt"), "--out", str(out),
                  "--epochs", "2", "--token-drop", "0.3", *NGRAMS,
                  "--eval-data", str(corpus / "pairs.tsv"))
    assert summary["steps"] == 4 and not (out / "tokenizer.json").exists()
    scores = run("eval", "sts", "--run", str(out), "--data", str(corpus / "pairs.tsv"),
                 "--device", "cpu", "--json")
    assert scores["spearman"] == pytest.approx(summary["sts_spearman:pairs.tsv"], abs=0.01)
    loaded = load_text_run(out)
    assert loaded.embed(WORDS[:3]).shape == (3, 16)
    assert loaded.encoder.idf.max() > 1  # the IDF of the training sentences came with it
    cosent = run("train-text", "--data", str(corpus / "pairs.tsv"), "--supervised",
                 "--supervised-loss", "cosent", "--out", str(tmp_path / "cosent"), *NGRAMS)
    assert cosent["steps"] == 4  # all 16 scored pairs, not only those >= positive_threshold
    data = json.loads((tmp_path / "cosent" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["examples"] == 16 and data["groups"] == 2


def test_mistakes_are_one_line(corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train-text", "--data", str(corpus / "sentences.txt"),
                                      "--supervised", "--out", str(tmp_path / "x")])
    assert "pairs are needed" in str(result.exception)
    result = CliRunner().invoke(app, ["eval", "sts", "--run", str(tmp_path / "nothing"),
                                      "--data", str(corpus / "pairs.tsv")])
    assert "holds no run" in str(result.exception)
    with pytest.raises(Exception, match="unknown key 'dimm'.*'dim'"):
        resolve_text_settings({"data": "x.txt"}, recipe={"dimm": 3}, recipe_name="r")


@pytest.mark.parametrize("name", text_recipe_names())
def test_every_text_recipe_is_valid_and_documented(name: str) -> None:
    recipe = load_text_recipe(name)
    assert {"summary", "tuned_on", "figure", "command"} <= set(recipe.about), name
    flags = {"data": "unused.txt"}
    if str(recipe.settings.get("text_backbone", "")).startswith("hf:"):
        with pytest.raises(Exception, match="names no folder"):  # the folder is the user's
            resolve_text_settings(flags, recipe=recipe.settings, recipe_name=name)
        flags["text_backbone"] = "hf:some/model/folder"
    resolve_text_settings(flags, recipe=recipe.settings, recipe_name=name)


def test_an_image_run_is_refused(tmp_path: Path) -> None:
    from contrastlab.runs.checkpoint import save_atomic

    (tmp_path / "checkpoints").mkdir()
    save_atomic({"model": {}}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(Exception, match="is an image run"):
        load_text_run(tmp_path)
