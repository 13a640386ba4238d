"""What embed, index build, export and search write and print: refusing to overwrite without
--force, a full disk, class names, the parity protocol and progress on stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("faiss", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from rich.console import Console  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from contrastlab.cli import app  # noqa: E402
from contrastlab.errors import ConfigError, WriteError  # noqa: E402
from contrastlab.eval.runs import evaluate_run  # noqa: E402
from contrastlab.serve.embed import EmbeddingTable, load_embeddings, save_embeddings  # noqa: E402
from contrastlab.serve.index import adopt_classes, build_index, load_index  # noqa: E402
from tests.serve.serve_helpers import encode_png, small_filesystem  # noqa: E402

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def embedded(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "emb.npy"
    result = invoke("embed", "--run", trained_run, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def tiny_table(n: int = 3) -> EmbeddingTable:
    return EmbeddingTable(np.eye(n, 64, dtype=np.float32), [f"old{i}" for i in range(n)],
                          np.arange(n), None, {"features": "backbone"})


# ---------------------------------------------------------------------- --force

def test_embed_refuses_to_replace_outputs_without_force(trained_run: Path, tmp_path: Path
                                                        ) -> None:
    out = tmp_path / "e.npy"
    save_embeddings(tiny_table(), out)
    result = invoke("embed", "--run", trained_run, "--out", out, "--split", "test")
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert f"'{out}' and '{out.with_suffix('.json')}' already exist" in message
    assert "--force" in message
    assert len(load_embeddings(out)) == 3  # untouched
    out.unlink()  # only the ids file left: it would be replaced too, so it is named
    result = invoke("embed", "--run", trained_run, "--out", out, "--split", "test")
    assert f"'{out.with_suffix('.json')}' already exists" in str(result.exception)
    result = invoke("embed", "--run", trained_run, "--out", out, "--split", "test", "--force")
    assert result.exit_code == 0, result.output
    assert len(load_embeddings(out)) == 360


def test_index_build_refuses_to_replace_an_index_without_force(embedded: Path, tmp_path: Path
                                                               ) -> None:
    index = tmp_path / "idx"
    assert invoke("index", "build", "--embeddings", embedded, "--out", index, "--kind",
                  "hnsw").exit_code == 0
    result = invoke("index", "build", "--embeddings", embedded, "--out", index)
    assert isinstance(result.exception, ConfigError)
    assert f"'{index / 'index.faiss'}'" in str(result.exception)
    assert "--force" in str(result.exception)
    assert load_index(index).kind == "hnsw"  # the HNSW index was kept
    result = invoke("index", "build", "--embeddings", embedded, "--out", index, "--force")
    assert result.exit_code == 0, result.output
    assert load_index(index).kind == "flat"
    assert sorted(p.name for p in index.iterdir()) == ["index.faiss", "index.json"]


def test_export_refuses_to_replace_an_artefact_without_force(trained_run: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "e.safetensors"
    out.write_bytes(b"previous")
    result = invoke("export", "--run", trained_run, "--format", "safetensors", "--out", out,
                    "--no-parity")
    assert isinstance(result.exception, ConfigError)
    assert f"'{out}' already exists" in str(result.exception) and out.read_bytes() == b"previous"
    result = invoke("export", "--run", trained_run, "--format", "safetensors", "--out", out,
                    "--no-parity", "--force")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


# ---------------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB file system holding small previous embeddings and a small previous index."""
    with small_filesystem(tmp_path / "disk", size="256k") as folder:
        save_embeddings(tiny_table(), folder / "e.npy")
        build_index(np.eye(3, 64, dtype=np.float32), ["a", "b", "c"], "hnsw").save(folder / "i")
        yield folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_embed_and_index_build_on_a_full_disk(trained_run: Path, embedded: Path,
                                              small_disk: Path) -> None:
    before = _listing(small_disk)
    result = invoke("embed", "--run", trained_run, "--out", small_disk / "e.npy", "--force")
    assert isinstance(result.exception, WriteError)
    message = str(result.exception)
    assert f"'{small_disk / 'e.npy'}'" in message and "No space left on device" in message
    assert "the previous file there is intact" in message
    assert len(load_embeddings(small_disk / "e.npy")) == 3
    result = invoke("index", "build", "--embeddings", embedded, "--out", small_disk / "i",
                    "--force")
    assert isinstance(result.exception, WriteError)
    assert f"'{small_disk / 'i' / 'index.faiss'}'" in str(result.exception)
    assert "No space left on device" in str(result.exception)
    previous = load_index(small_disk / "i")
    assert previous.kind == "hnsw" and previous.ids == ["a", "b", "c"]
    assert _listing(small_disk) == before  # no temporary file anywhere


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_on_a_full_disk(trained_run: Path, tmp_path: Path, fmt: str) -> None:
    # torch.jit.save used to abort the whole process here (a C++ exception in a destructor).
    with small_filesystem(tmp_path / "disk", size="128k") as folder:
        (folder / "previous").write_bytes(b"x")
        result = invoke("export", "--run", trained_run, "--format", fmt, "--out",
                        folder / "enc", "--no-parity")
        assert isinstance(result.exception, WriteError), result.output
        assert f"'{folder / 'enc'}'" in str(result.exception)
        assert "No space left on device" in str(result.exception)
        assert _listing(folder) == ["previous"]


def test_a_full_disk_is_one_line_and_exit_2(trained_run: Path, small_disk: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "contrastlab", "embed", "--run", str(trained_run), "--out",
         str(small_disk / "e.npy"), "--force"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: could not write embeddings")
    assert "No space left on device" in lines[0] and "Traceback" not in result.stderr


# ---------------------------------------------------------------------- search: class names

def test_search_prints_class_names(trained_run: Path, run_encoder, digits_splits,
                                   tmp_path: Path) -> None:
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    test = digits_splits.test
    table = EmbeddingTable(run_encoder.embed(test.images), test.ids, test.labels.numpy(), names,
                           {**run_encoder.card.to_json(), "data": "digits"})
    save_embeddings(table, tmp_path / "e.npy")
    assert invoke("index", "build", "--embeddings", tmp_path / "e.npy", "--out",
                  tmp_path / "idx").exit_code == 0
    query = tmp_path / "q.png"
    query.write_bytes(encode_png(test.images[7, 0].numpy()))
    text = invoke("search", "--index", tmp_path / "idx", "--run", trained_run, "--image", query,
                  "-k", "1")
    assert text.exit_code == 0, text.output
    assert text.stdout.split()[2:] == [test.ids[7], "label", names[int(test.labels[7])]]
    hits = json.loads(invoke("search", "--index", tmp_path / "idx", "--run", trained_run,
                             "--image", query, "-k", "1", "--json").stdout)["hits"]
    assert hits[0]["label"] == int(test.labels[7]) and hits[0]["class"] == names[hits[0]["label"]]


def test_an_index_without_class_names_takes_the_runs_for_the_runs_own_data() -> None:
    index = build_index(np.eye(3, 4, dtype=np.float32), None, "flat", [0, 1, 1],
                        meta={"data": "photos/"})
    adopt_classes(index, ["cat", "dog"], "other/")  # built from other data: labels mean else
    assert index.classes is None
    adopt_classes(index, ["cat", "dog"], "photos/")
    assert [h.class_name for h in index.search(np.eye(3, 4, dtype=np.float32), 1)[0]] == ["cat"]


# ---------------------------------------------------------------------- export's parity kNN

def test_parity_knn_follows_the_runs_protocol_and_says_so(trained_run: Path, tmp_path: Path
                                                          ) -> None:
    config = yaml.safe_load((trained_run / "config.yaml").read_text())["eval"]
    run_knn = evaluate_run(trained_run, k=config["knn_k"],
                           temperature=config["knn_temperature"])["knn_top1"]
    result = invoke("export", "--run", trained_run, "--format", "onnx", "--out",
                    tmp_path / "a.onnx", "--parity-samples", "32", "--json")
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["knn_train"] == parity["knn_train_total"] == 1437
    assert parity["knn_k"] == config["knn_k"] == 20
    assert parity["knn_reference"] == pytest.approx(run_knn, abs=1e-9)
    assert "all 1,437 training images" in parity["knn_protocol"]
    text = invoke("export", "--run", trained_run, "--format", "onnx", "--out",
                  tmp_path / "b.onnx", "--parity-samples", "32", "--knn-train-limit", "300")
    assert text.exit_code == 0, text.output
    assert ("parity: kNN with 300 of the 1,437 training images as neighbours (a seeded random "
            "subset, --knn-train-limit; k=20, temperature 0.1), so the figures differ from the "
            "run's own kNN") in text.stdout


# ---------------------------------------------------------------------- progress on stderr

def test_long_phases_show_progress_on_stderr(trained_run: Path, embedded: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200)
    monkeypatch.setattr("contrastlab.serve.cli.err_console", terminal)
    assert invoke("embed", "--run", trained_run, "--out", tmp_path / "e.npy", "--split",
                  "test").exit_code == 0
    assert invoke("index", "build", "--embeddings", embedded, "--out", tmp_path / "i",
                  "--kind", "ivf").exit_code == 0
    assert invoke("export", "--run", trained_run, "--format", "onnx", "--out",
                  tmp_path / "a.onnx", "--parity-samples", "32", "--int8").exit_code == 0
    shown = screen.getvalue()
    for phase in ("reading digits", "embedding 360 images", "adding 1,797 vectors to the ivf",
                  "IVF: k-means", "exporting the model to ONNX", "quantising to int8",
                  "parity check"):
        assert phase in shown, phase
