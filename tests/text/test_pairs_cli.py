"""The image-text commands end to end on tiny data: train-pairs (CLIP and SigLIP, a tokenizer
trained on the captions or given), eval zeroshot with templates, eval retrieval; mistakes as one
clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.recipes import load_pair_recipe, pair_recipe_names
from contrastlab.runs.pair_run import load_pair_run
from contrastlab.training.pair_settings import resolve_pair_settings
from tests.text.pair_data import write_folder

TINY = ["--dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "4", "--device", "cpu",
        "--log-every", "1", "--lr", "0.01", "--projection-dim", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("pairs") / "colours", per_class=2)


def run(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_clip_then_zeroshot_and_retrieval(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip"
    summary = run("train-pairs", "--data", str(pairs), "--out", str(out), "--epochs", "2",
                  "--vocab-size", "40", *TINY, "--eval-data", str(pairs),
                  "--templates", "a {} square", "--templates", "a photo of a {}.",
                  "--eval-pairs", str(pairs))
    assert summary["steps"] == 4 and {"zeroshot_top1", "image_to_text_R@1"} <= set(summary)
    assert (out / "tokenizer.json").is_file() and (out / "config.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["type"] == "data" and records[0]["pairs"] == 8
    assert records[0]["images"] == 8 and records[0]["skipped_rows"] == 0
    assert "logit_scale" in records[1] and records[-1]["type"] == "final"
    scores = run("eval", "zeroshot", "--run", str(out), "--data", str(pairs), "--templates",
                 "a {} square", "--templates", "a photo of a {}.", "--device", "cpu", "--json")
    assert scores["classes"] == 4 and scores["images"] == 8 and scores["templates"] == 2
    assert scores["zeroshot_top1"] == pytest.approx(summary["zeroshot_top1"], abs=0.01)
    assert scores["zeroshot_top5"] == 100.0  # 4 classes: top-5 holds every class
    recalls = run("eval", "retrieval", "--run", str(out), "--data", str(pairs), "--device",
                  "cpu", "--json")
    assert recalls["captions"] == 8 and recalls["image_to_text_R@10"] == 100.0
    assert recalls["text_to_image_R@1"] == pytest.approx(summary["text_to_image_R@1"], abs=0.01)
    loaded = load_pair_run(out)
    assert not loaded.method.training
    embedded = loaded.embed_texts(["a red square"])
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(1))


def test_siglip_with_a_given_tokenizer_and_a_csv(pairs: Path, tmp_path: Path) -> None:
    (tmp_path / "captions.txt").write_text("a red square\na blue square\n")
    run("tokenizer", "train", "--data", str(tmp_path / "captions.txt"), "--out",
        str(tmp_path / "tok.json"), "--vocab-size", "30", "--min-frequency", "1")
    table = tmp_path / "pairs.csv"
    table.write_text("path,caption\n" + "".join(
        f"{pairs}/{c}/0.png,a {c} square\n"
        for c in ("red", "blue", "green")))
    out = tmp_path / "siglip"
    summary = run("train-pairs", "--data", str(table), "--method", "siglip", "--bias", "-5",
                  "--tokenizer", str(tmp_path / "tok.json"), "--out", str(out), *TINY)
    assert summary["steps"] == 1
    config = (out / "config.yaml").read_text()
    assert "bias: -5.0" in config and "method: siglip" in config
    assert load_pair_run(out).tokenizer.vocab_size < 40


def test_mistakes_are_one_line(pairs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train-pairs", "--data", str(pairs), "--bias", "1",
                                      "--out", str(tmp_path / "x")])
    assert "not a setting of method 'clip'" in str(result.exception)
    result = CliRunner().invoke(app, ["train-pairs", "--data", str(pairs), "--backbone",
                                      "resnet-nine", "--out", str(tmp_path / "x")])
    assert "unknown backbone 'resnet-nine'" in str(result.exception)
    result = CliRunner().invoke(app, ["eval", "zeroshot", "--run", str(tmp_path / "none"),
                                      "--data", str(pairs)])
    assert "holds no run" in str(result.exception)


@pytest.mark.parametrize("name", pair_recipe_names())
def test_every_image_text_recipe_is_valid_and_documented(name: str) -> None:
    recipe = load_pair_recipe(name)
    assert {"summary", "tuned_on", "figure", "command", "usage"} <= set(recipe.about), name
    flags: dict[str, str] = {"data": "unused.csv"}
    if str(recipe.settings.get("text_backbone", "")).startswith("hf:"):
        with pytest.raises(Exception, match="names no folder"):  # the folder is the user's
            resolve_pair_settings(flags, recipe=recipe.settings, recipe_name=name)
        flags["text_backbone"] = "hf:some/model/folder"
    settings = resolve_pair_settings(flags, recipe=recipe.settings, recipe_name=name)
    assert settings.train.method == recipe.settings["method"]


def test_a_recipe_is_trained_by_name_and_flags_override_it(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "recipe"
    summary = run("train-pairs", "--recipe", "cifar10-clip-templated-cpu", "--data", str(pairs),
                  "--out", str(out), "--image-size", "16", "--batch-size", "4", "--dim", "16",
                  "--projection-dim", "8", "--vocab-size", "40", "--device", "cpu",
                  "--threads", "1", "--method", "siglip")
    assert summary["steps"] == 2  # the recipe's 1 epoch of 8 pairs in batches of 4
    saved = (out / "config.yaml").read_text()
    assert "method: siglip" in saved and "backbone: convnet-small" in saved
    assert "max_length: 16" in saved  # from the recipe
    result = CliRunner().invoke(app, ["train-pairs", "--recipe", "cifar10-clip", "--data",
                                      str(pairs), "--out", str(tmp_path / "x")])
    assert "unknown image-text recipe 'cifar10-clip'" in str(result.exception)
