"""``train-pairs --text-backbone hf:PATH [--lock-text]``: a local Hugging Face model as CLIP's
text tower.

The tiny BERT of tests/text/hf_model.py is the text tower of a few CLIP / SigLIP steps on
solid-colour squares. The loaded run's text embeddings are checked against transformers alone
(the model with the run's weights, mean-pooled by hand, then the run's projection,
normalised), with the model folder deleted; a locked tower keeps the folder's weights bit for
bit while the image tower learns; a stopped run resumes exactly; mistakes are clear.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("transformers")

from contrastlab.cli import app  # noqa: E402
from contrastlab.errors import ConfigError  # noqa: E402
from contrastlab.runs.checkpoint import load_checkpoint  # noqa: E402
from contrastlab.runs.pair_run import load_pair_run  # noqa: E402
from contrastlab.serve.text_encoders import text_encoder_from_run  # noqa: E402
from contrastlab.training.locked_text import encode_locked_captions  # noqa: E402
from contrastlab.training.pair_settings import resolve_pair_settings  # noqa: E402
from contrastlab.training.pair_trainer import fit_pairs  # noqa: E402
from tests.text.hf_model import direct_embeddings, write_tiny_bert  # noqa: E402
from tests.text.pair_data import write_folder  # noqa: E402
from tests.text.test_text_resume import assert_same_tensors, steps  # noqa: E402
from tests.threads import one_thread  # noqa: E402

TEXT = "tower_b.encoder.model."
IMAGE = "backbone."
VALUES = {"backbone": "convnet-small", "projection_dim": 8, "batch_size": 4, "epochs": 2,
          "lr": 1e-3, "log_every": 1, "device": "cpu"}
CAPTIONS = ["a red square", "a blue square", "two dogs run in a park", ""]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("hf-pairs") / "colours", per_class=2)


def pair_run(values: dict[str, Any], stop_after_step: int | None = None) -> dict[str, Any]:
    with one_thread():
        result = fit_pairs(resolve_pair_settings(values), stop_after_step=stop_after_step)
    return load_checkpoint(result.run_dir / "checkpoints" / "last.pt")


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder, local_files_only=True).state_dict()


def cli(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class TrainedRun:
    """A CLIP run with the tiny BERT as its (unlocked) text tower, its summary, and the text
    embeddings of :data:`CAPTIONS` computed directly; its model folder is deleted."""

    out: Path
    summary: dict
    want: torch.Tensor


@pytest.fixture(scope="module")
def trained(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("hf-clip")
    folder = write_tiny_bert(root / "tiny-bert")
    out = root / "clip"
    summary = cli("train-pairs", "--data", str(pairs), "--text-backbone", f"hf:{folder}",
                  "--backbone", "convnet-small", "--projection-dim", "8", "--batch-size", "4",
                  "--lr", "1e-3", "--device", "cpu", "--threads", "1", "--out", str(out),
                  "--eval-data", str(pairs), "--templates", "a {} square")
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    text = part(state["model"], TEXT)
    initial = folder_weights(folder)
    assert text.keys() == initial.keys()
    assert any(not torch.equal(text[k], initial[k]) for k in text)  # unlocked: it learnt
    projection = state["model"]["projection_b.weight"]
    want = F.normalize(direct_embeddings(folder, CAPTIONS, text) @ projection.T, dim=1)
    shutil.rmtree(folder)  # the run folder alone must suffice from here on
    return TrainedRun(out, summary, want)


def test_hf_text_tower_embeds_as_transformers_does_from_the_run_folder_alone(
        trained: TrainedRun, pairs: Path) -> None:
    out, want = trained.out, trained.want
    assert trained.summary["steps"] == 2 and "zeroshot_top1" in trained.summary
    assert not (out / "tokenizer.json").exists()  # the folder's tokenizer is in the checkpoint
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert {"config.json", "tokenizer.json"} <= set(state["hf_files"])
    assert state["hf_source"]["model_type"] == "bert"
    loaded = load_pair_run(out)
    assert not loaded.method.tower_b.encoder.training
    torch.testing.assert_close(loaded.embed_texts(CAPTIONS), want, atol=2e-5, rtol=1e-4)
    encoder = text_encoder_from_run(out)  # what embed / search / serve use
    assert encoder.card.backbone == "hf:bert" and encoder.card.space.endswith("/shared")
    torch.testing.assert_close(torch.from_numpy(encoder.embed_texts(CAPTIONS)), want,
                               atol=2e-5, rtol=1e-4)
    scores = cli("eval", "zeroshot", "--run", str(out), "--data", str(pairs), "--templates",
                 "a {} square", "--device", "cpu", "--json")
    assert scores["zeroshot_top1"] == pytest.approx(trained.summary["zeroshot_top1"], abs=0.01)


def test_hf_text_tower_embeds_from_the_cli(trained: TrainedRun, pairs: Path,
                                                         tmp_path: Path) -> None:
    pytest.importorskip("faiss", reason="the serve extra is not installed")
    texts = tmp_path / "captions.txt"
    texts.write_text("\n".join(CAPTIONS[:3]) + "\n")
    embedded = tmp_path / "captions.npy"
    result = CliRunner().invoke(app, ["embed", "--run", str(trained.out), "--texts", str(texts),
                                      "--out", str(embedded), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    torch.testing.assert_close(torch.from_numpy(np.load(embedded)), trained.want[:3],
                               atol=2e-5, rtol=1e-4)


def test_serving_an_hf_pair_run(trained: TrainedRun) -> None:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from contrastlab.serve.app import Service, ServiceLimits, create_app
    from contrastlab.serve.text_service import open_served_model

    model = open_served_model(trained.out)
    assert model.inputs == ["images", "texts"]
    service = Service(model.images, None, ServiceLimits(), texts=model.texts)
    with TestClient(create_app(service)) as client:
        body = client.post("/v1/embed", json={"texts": CAPTIONS[:2]}).json()
    got = torch.tensor(body["embeddings"], dtype=torch.float32)
    torch.testing.assert_close(got, trained.want[:2], atol=2e-5, rtol=1e-4)


def test_onnx_export_of_an_hf_text_tower_is_refused(trained: TrainedRun) -> None:
    result = CliRunner().invoke(app, ["export", "--run", str(trained.out), "--format", "onnx"])
    assert isinstance(result.exception, ConfigError)
    assert "Hugging Face model" in str(result.exception)
    assert "--tower image" in str(result.exception)
    assert not (trained.out / "export" / "image-tower.onnx").exists()  # before writing


def test_hf_pair_run_stopped_mid_epoch_resumes_exactly(pairs: Path, tmp_path: Path) -> None:
    """Unlocked (BERT's dropout 0.1 draws from the saved random state); the folder is gone
    when the run resumes."""
    folder = write_tiny_bert(tmp_path / "tiny-bert")
    values = {**VALUES, "data": str(pairs), "text_backbone": f"hf:{folder}", "method": "siglip"}
    straight = pair_run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "stopped"
    stopped = pair_run({**values, "out": str(out)}, stop_after_step=3)
    assert (stopped["position"]["epoch"], stopped["position"]["batch_in_epoch"]) == (1, 1)
    shutil.rmtree(folder)
    resumed = pair_run({"resume": True, "out": str(out)})
    assert resumed["position"]["step"] == 4
    for key in ("model", "optimizer", "view_generator", "hf_files"):
        assert_same_tensors(resumed[key], straight[key], key)
    assert resumed["hf_source"] == straight["hf_source"]
    assert steps(out) == steps(tmp_path / "straight")


def test_locked_text_tower_keeps_its_weights_while_the_image_tower_learns(
        pairs: Path, tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "tiny-bert")
    initial = folder_weights(folder)
    values = {**VALUES, "data": str(pairs), "text_backbone": f"hf:{folder}", "lock_text": True}
    straight = pair_run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "stopped"
    first = pair_run({**values, "out": str(out)}, stop_after_step=1)
    resumed = pair_run({"resume": True, "out": str(out)})
    for key in ("model", "optimizer", "view_generator"):
        assert_same_tensors(resumed[key], straight[key], key)
    for state in (first, resumed):
        assert_same_tensors(part(state["model"], TEXT), initial, "text tower")
    for prefix in (IMAGE, "projection_a.", "projection_b."):
        before, after = part(first["model"], prefix), part(resumed["model"], prefix)
        assert any(not torch.equal(before[k], after[k]) for k in after), prefix
    loaded = load_pair_run(out)
    method = loaded.method
    assert not any(p.requires_grad for p in method.tower_b.parameters())
    trainable = [p for p in method.parameters() if p.requires_grad]
    held = sum(len(group["params"]) for group in resumed["optimizer"]["param_groups"])
    assert held == len(trainable) > 0  # image tower, projections, temperature: not the text
    method.train()  # a locked tower stays in eval mode (no dropout)
    assert not method.tower_b.encoder.training and method.backbone.training
    assert "lock_text: true" in (out / "config.yaml").read_text()
    # the distinct captions are encoded once: the same features as the tower on the batch
    captions = ["a red square", "a blue square", "a red square", "", "a blue square"]
    tokens = loaded.tokenizer.encode(captions, loaded.max_length)
    cached = encode_locked_captions(method.tower_b, tokens, torch.device("cpu"), chunk=2)
    assert cached.features.shape[0] == 3 and cached.rows.tolist()[0] == cached.rows.tolist()[2]
    with torch.no_grad():
        direct = method.tower_b.encoder(tokens.ids, tokens.mask)
    torch.testing.assert_close(cached.batch(torch.arange(5)).features, direct,
                               atol=1e-5, rtol=1e-4)


def test_mistakes_are_clear(pairs: Path, tmp_path: Path) -> None:
    base = {"data": str(pairs), "out": str(tmp_path / "x")}
    with pytest.raises(ConfigError, match="lock_text freezes a pretrained text tower"):
        resolve_pair_settings({**base, "lock_text": True})
    with pytest.raises(ConfigError, match="unknown text_backbone 'ngrams' for train-pairs"):
        resolve_pair_settings({**base, "text_backbone": "ngrams"})
    with pytest.raises(ConfigError, match="names no folder"):
        resolve_pair_settings({**base, "text_backbone": "hf:"})
    with pytest.raises(ConfigError, match="the model folder's own tokenizer"):
        resolve_pair_settings({**base, "text_backbone": "hf:/x", "tokenizer": "t.json"})
    missing = tmp_path / "no-model"
    with pytest.raises(ConfigError, match=f"the folder '{missing}' does not exist"):
        fit_pairs(resolve_pair_settings({**base, **VALUES, "text_backbone": f"hf:{missing}"}))


def test_a_train_text_hf_run_serves_its_encoder_too(tmp_path: Path) -> None:
    """The sentence encoder of a ``train-text --text-backbone hf:PATH`` run through
    text_encoder_from_run (embed / search / serve) is the run's own, normalised."""
    from contrastlab.runs.text_run import load_text_run
    from contrastlab.training.text_settings import resolve_text_settings
    from contrastlab.training.text_trainer import fit_text
    from tests.text.hf_model import SENTENCES

    folder = write_tiny_bert(tmp_path / "tiny-bert")
    (tmp_path / "s.txt").write_text("\n".join(SENTENCES) + "\n")
    with one_thread():
        fit_text(resolve_text_settings({"text_backbone": f"hf:{folder}", "epochs": 0,
                                        "data": str(tmp_path / "s.txt"), "device": "cpu",
                                        "out": str(tmp_path / "run")}))
    encoder = text_encoder_from_run(tmp_path / "run")
    assert encoder.card.backbone == "hf:bert" and encoder.card.space.endswith("/text")
    want = F.normalize(load_text_run(tmp_path / "run").embed(CAPTIONS), dim=1)
    torch.testing.assert_close(torch.from_numpy(encoder.embed_texts(CAPTIONS)), want,
                               atol=1e-6, rtol=1e-5)


def test_shards_with_an_hf_tower_are_read_into_memory_and_stream_on_is_refused(
        tmp_path: Path) -> None:
    from tests.text.test_pairs_stream import write_shards

    shards = write_shards(tmp_path / "shards", shards=2, per_shard=4)
    folder = write_tiny_bert(tmp_path / "tiny-bert")
    values = {**VALUES, "data": str(shards), "text_backbone": f"hf:{folder}", "epochs": 1}
    with pytest.raises(ConfigError, match="--stream on with text_backbone hf:"):
        pair_run({**values, "stream": "on", "out": str(tmp_path / "on")})
    state = pair_run({**values, "out": str(tmp_path / "auto")})  # auto: in memory
    assert "stream" not in state and state["hf_files"]
    records = [json.loads(line) for line in (tmp_path / "auto" / "metrics.jsonl").open()]
    data = next(r for r in records if r["type"] == "data")
    assert data["pairs"] == 8 and data["streamed"] is False
