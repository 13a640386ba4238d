"""Evaluating a run on tar shards streams them (eval/runs.py): the features, labels and order
are those of the shards decoded into memory, so every score is the same; the end of a streamed
run evaluates the same way as `contrastlab eval`, and `embed` writes the in-memory vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from contrastlab import train
from contrastlab.cli import app
from contrastlab.config import build_config
from contrastlab.data import ImageDataset, load_dataset
from contrastlab.data.shard_build import build_shards
from contrastlab.data.streamed_images import StreamedImages
from contrastlab.eval.runs import evaluate_run, frozen_features, load_eval_data, load_run
from contrastlab.eval.threads import single_thread_if_small


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run trained (one epoch, streamed) on 3 of the digits shards (225 images); the
    end of the run evaluated it."""
    shards = tmp_path_factory.mktemp("digit-shards")
    build_shards("digits", shards, shard_bytes=150 * 1024, max_side=None)
    pattern = str(shards / "{000000..000002}.tar")
    out = tmp_path_factory.mktemp("streamed-eval") / "run"
    config = build_config(None, {"data": pattern, "epochs": 1, "batch_size": 64,
                                 "backbone": "convnet-small", "projection_hidden_dim": 32,
                                 "projection_dim": 16, "out": str(out), "device": "cpu",
                                 "diagnose_every": 0, "loader_workers": 0, "knn_k": 20})
    with single_thread_if_small(0):
        train(config, console=Console(quiet=True))
    return out, pattern


def test_streamed_features_equal_the_in_memory_ones(streamed_run: tuple[Path, str]) -> None:
    run, _ = streamed_run
    loaded = load_run(run)
    streamed = load_eval_data(loaded)
    memory = load_eval_data(loaded, stream=False)
    assert isinstance(streamed.train, StreamedImages)
    assert isinstance(memory.train, ImageDataset)
    for ours, theirs in ((streamed.train, memory.train), (streamed.test, memory.test)):
        got = frozen_features(loaded, ours)
        want = frozen_features(loaded, theirs)
        assert got.shape == want.shape and len(got) == len(theirs) > 40
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.equal(ours.labels, theirs.labels)
        assert ours.ids == theirs.ids


def test_end_of_run_scores_are_those_of_eval(streamed_run: tuple[Path, str]) -> None:
    run, _ = streamed_run
    final = json.loads((run / "final_metrics.json").read_text())
    scores = evaluate_run(run, ("knn", "linear"), k=20)
    assert final["knn_top1"] == scores["knn_top1"]
    assert final["linear_top1"] == scores["linear_top1"]
    assert final["n_test"] == scores["n_test"] > 40


def test_embed_streams_the_in_memory_vectors(streamed_run: tuple[Path, str],
                                             tmp_path: Path) -> None:
    pytest.importorskip("faiss", reason="the serve extra is not installed")
    run, pattern = streamed_run
    out = tmp_path / "emb.npy"
    result = CliRunner().invoke(app, ["embed", "--run", str(run), "--out", str(out),
                                      "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    vectors = np.load(out)
    side = json.loads(out.with_suffix(".json").read_text())
    splits = load_dataset(pattern, test_fraction=0.2, split_seed=0)
    images = torch.cat([splits.train.images, splits.test.images])
    want = torch.nn.functional.normalize(load_run(run).embed(images), dim=1).numpy()
    assert vectors.shape == want.shape
    assert np.allclose(vectors, want, atol=1e-5)
    assert side["ids"] == splits.train.ids + splits.test.ids
    assert side["labels"] == torch.cat([splits.train.labels, splits.test.labels]).tolist()
