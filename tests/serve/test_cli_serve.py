"""The embed, export, index build and search commands, end to end on the tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from typer.testing import CliRunner  # noqa: E402

from contrastlab.cli import app  # noqa: E402
from contrastlab.errors import ConfigError, DataError  # noqa: E402
from tests.serve.serve_helpers import encode_png  # noqa: E402

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    return result


@pytest.fixture(scope="module")
def embedded(trained_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "emb.npy"
    result = invoke("embed", "--run", trained_run, "--out", out, "--batch-size", "500")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["count"] == 1797 and summary["dim"] == 64 and summary["labels"] is True
    return out


def test_embed_writes_vectors_ids_and_labels(embedded: Path, run_encoder, digits_splits) -> None:
    vectors = np.load(embedded)
    side = json.loads(embedded.with_suffix(".json").read_text())
    assert vectors.shape == (1797, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    train = digits_splits.train
    assert side["ids"][: len(train)] == train.ids and side["labels"][:5] == \
        train.labels[:5].tolist()
    np.testing.assert_allclose(vectors[:10], run_encoder.embed(train.images[:10]), atol=1e-6)
    assert side["meta"]["features"] == "backbone" and side["meta"]["normalized"] is True


def test_embed_options(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "test.npy"
    result = invoke("embed", "--run", trained_run, "--out", out, "--split", "test",
                    "--features", "projector", "--no-normalize")
    assert result.exit_code == 0, result.output
    vectors = np.load(out)
    assert vectors.shape == (360, 16) and not np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert isinstance(invoke("embed", "--run", trained_run, "--out", tmp_path / "x.csv")
                      .exception, ConfigError)
    assert isinstance(invoke("embed", "--run", trained_run, "--out", out, "--split", "val")
                      .exception, ConfigError)


def test_index_build_and_search_find_the_query_itself(embedded: Path, trained_run: Path,
                                                      digits_splits, tmp_path: Path) -> None:
    index = tmp_path / "idx"
    result = invoke("index", "build", "--embeddings", embedded, "--out", index, "--kind", "hnsw")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 1797
    query = tmp_path / "q.png"
    position = 7
    query.write_bytes(encode_png(digits_splits.test.images[position, 0].numpy()))
    result = invoke("search", "--index", index, "--run", trained_run, "--image", query, "-k", "3",
                    "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["id"] == digits_splits.test.ids[position]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and len(hits) == 3
    assert hits[0]["label"] == int(digits_splits.test.labels[position])
    text = invoke("search", "--index", index, "--run", trained_run, "--image", query, "-k", "2")
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1"
    assert digits_splits.test.ids[position] in lines[0]


def test_export_then_search_with_the_artefact(embedded: Path, trained_run: Path,
                                              digits_splits, tmp_path: Path) -> None:
    artefact = tmp_path / "enc.onnx"
    result = invoke("export", "--run", trained_run, "--format", "onnx", "--out", artefact,
                    "--json", "--parity-samples", "64")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["parity"]["passed"] and report["parity"]["mean_cosine"] >= 0.999
    assert report["card"]["image_size"] == 8 and report["card"]["embedding_dim"] == 64
    index = tmp_path / "idx"
    assert invoke("index", "build", "--embeddings", embedded, "--out", index).exit_code == 0
    query = tmp_path / "q.png"
    query.write_bytes(encode_png(digits_splits.train.images[3, 0].numpy()))
    result = invoke("search", "--index", index, "--artefact", artefact, "--image", query,
                    "--json")
    assert json.loads(result.stdout)["hits"][0]["id"] == digits_splits.train.ids[3]
    text = invoke("export", "--run", trained_run, "--format", "torchscript", "--out",
                  tmp_path / "e.pt", "--parity-samples", "32", "--knn-train-limit", "300")
    assert text.exit_code == 0, text.output
    assert "parity: mean cosine" in text.stdout and "parity: passed" in text.stdout


def test_search_refuses_an_index_of_other_features(trained_run: Path, tmp_path: Path,
                                                   digits_splits) -> None:
    out = tmp_path / "p.npy"
    assert invoke("embed", "--run", trained_run, "--out", out, "--split", "test",
                  "--features", "projector").exit_code == 0
    assert invoke("index", "build", "--embeddings", out, "--out", tmp_path / "i").exit_code == 0
    query = tmp_path / "q.png"
    query.write_bytes(encode_png(digits_splits.test.images[0, 0].numpy()))
    result = invoke("search", "--index", tmp_path / "i", "--run", trained_run, "--image", query,
                    "--features", "backbone")
    assert isinstance(result.exception, ConfigError)
    missing = invoke("search", "--index", tmp_path / "i", "--run", trained_run, "--image",
                     tmp_path / "nope.png")
    assert isinstance(missing.exception, DataError)


HEAVY = ["fastapi", "uvicorn", "onnx", "onnxruntime", "faiss", "safetensors", "httpx",
         "pyarrow", "python_multipart"]


def test_user_errors_are_one_line_and_exit_2_without_the_serving_libraries(
        trained_run: Path) -> None:
    # A fresh interpreter runs the command line as `contrastlab` does and, when it exits,
    # lists which serving libraries got imported: none, they are lazy.
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: print('loaded:', [m for m in {HEAVY!r} "
            "if m in sys.modules]))\n"
            "from contrastlab.cli import main\n"
            f"sys.argv = ['contrastlab', 'export', '--run', {str(trained_run)!r}, '--format', "
            "'onxx']\n"
            "main()\n")
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2
    assert "unknown export format 'onxx'" in result.stderr and "Did you mean 'onnx'" in \
        result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == "loaded: []"


def test_serve_and_embed_argument_errors(trained_run: Path, tmp_path: Path) -> None:
    artefact = tmp_path / "a.onnx"
    for args in (["serve"], ["serve", "--run", trained_run, "--artefact", artefact],
                 ["serve", "--run", trained_run, "--port", "70000"],
                 ["serve", "--run", trained_run, "--max-batch", "0"],
                 ["serve", "--run", trained_run, "--threads", "0"],
                 ["serve", "--run", trained_run, "--max-aspect-ratio", "0.5"],
                 ["serve", "--run", trained_run, "--max-request-pixels", "0"],
                 ["serve", "--run", trained_run, "--header-timeout", "0"],
                 ["serve", "--run", trained_run, "--max-json-mb", "0"],
                 ["serve", "--run", trained_run, "--decode-threads", "0"]):
        result = invoke(*args)
        assert isinstance(result.exception, ConfigError), (args, result.output)
    assert invoke("export", "--run", trained_run, "--format", "onnx", "--out", artefact,
                  "--no-parity").exit_code == 0
    result = invoke("embed", "--artefact", artefact, "--out", tmp_path / "e.npy")
    assert isinstance(result.exception, ConfigError) and "--data is required" in \
        str(result.exception)
    result = invoke("embed", "--artefact", artefact, "--data", "digits", "--split", "test",
                    "--out", tmp_path / "e.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "e.npy").shape == (360, 64)
