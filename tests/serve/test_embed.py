"""Embeddings of a dataset, against the model computed directly, and their files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.runs import load_run
from contrastlab.serve.embed import (
    EmbeddingTable,
    embed_images,
    load_embeddings,
    save_embeddings,
)
from contrastlab.serve.encoders import encoder_from_run


def _direct(run: Path, images: torch.Tensor, projector: bool) -> np.ndarray:
    """The run's model applied by hand: (x/255 - mean)/std, forward, divide by the L2 norm."""
    loaded = load_run(run)
    meta = loaded.meta
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x = (images.float() / 255.0 - mean) / std
    with torch.no_grad():
        h = loaded.method.backbone(x)
        z = loaded.method.projection_head(h) if projector else h
    z = z.double()
    return (z / z.norm(dim=1, keepdim=True)).numpy()


@pytest.mark.parametrize("features", ["backbone", "projector"])
def test_embeddings_match_the_model_applied_directly(trained_run: Path, digits_splits,
                                                     features: str) -> None:
    encoder = encoder_from_run(trained_run, features)
    images = digits_splits.test.images[:50]
    seen: list[int] = []
    ours = embed_images(encoder, images, batch_size=16, progress=seen.append)
    assert ours.dtype == np.float32 and ours.shape == (50, encoder.card.embedding_dim)
    assert seen == [16, 16, 16, 2]
    np.testing.assert_allclose(ours, _direct(trained_run, images, features == "projector"),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    expected_dim = 16 if features == "projector" else 64  # projection_dim / convnet-small
    assert encoder.card.embedding_dim == expected_dim


def test_unnormalised_embeddings_keep_their_norm(run_encoder, digits_splits) -> None:
    images = digits_splits.test.images[:8]
    raw = embed_images(run_encoder, images, normalize=False)
    unit = embed_images(run_encoder, images)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(raw / norms, unit, atol=1e-6)


def test_embed_rejects_bad_arguments(run_encoder) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        embed_images(run_encoder, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), batch_size=0)
    with pytest.raises(DataError, match="3 channel"):
        embed_images(run_encoder, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="no images"):
        embed_images(run_encoder, torch.zeros(0, 1, 8, 8, dtype=torch.uint8))


def _table(labels: bool = True) -> EmbeddingTable:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 3)).astype(np.float32)
    return EmbeddingTable(vectors, [f"img/{i}.png" for i in range(5)],
                          np.arange(5) % 2 if labels else None, ["even", "odd"] if labels else None,
                          {"features": "backbone", "embedding_dim": 3})


def test_npy_round_trip_with_json_sidecar(tmp_path: Path) -> None:
    table = _table()
    written = save_embeddings(table, tmp_path / "e.npy")
    assert written == [tmp_path / "e.npy", tmp_path / "e.json"]
    raw = np.load(tmp_path / "e.npy", allow_pickle=False)  # a plain array for other tools
    assert raw.dtype == np.float32 and np.array_equal(raw, table.vectors)
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["ids"][2] == "img/2.png" and side["labels"] == [0, 1, 0, 1, 0]
    back = load_embeddings(tmp_path / "e.npy")
    assert back.ids == table.ids and back.classes == ["even", "odd"]
    assert np.array_equal(back.vectors, table.vectors)
    assert back.labels is not None and back.labels.tolist() == [0, 1, 0, 1, 0]
    assert back.meta == table.meta


def test_bare_npy_gets_row_numbers_as_ids(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((3, 4), dtype=np.float64))
    table = load_embeddings(tmp_path / "v.npy")
    assert table.ids == ["0", "1", "2"] and table.vectors.dtype == np.float32
    assert table.labels is None


def test_bad_embedding_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_embeddings(tmp_path / "missing.npy")
    np.save(tmp_path / "ints.npy", np.ones((3, 4), dtype=np.int64))
    with pytest.raises(DataError, match="floating-point"):
        load_embeddings(tmp_path / "ints.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read"):
        load_embeddings(tmp_path / "junk.npy")
    with pytest.raises(ConfigError, match=".npy or .parquet"):
        save_embeddings(_table(), tmp_path / "e.csv")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(ConfigError, match="pip install pyarrow"):
        save_embeddings(_table(), tmp_path / "e.parquet")


def test_parquet_round_trip(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    for labels in (True, False):
        table = _table(labels)
        save_embeddings(table, tmp_path / "e.parquet")
        columns = pq.read_table(tmp_path / "e.parquet").column_names
        assert columns == (["id", "label", "embedding"] if labels else ["id", "embedding"])
        back = load_embeddings(tmp_path / "e.parquet")
        assert back.ids == table.ids and np.array_equal(back.vectors, table.vectors)
        assert (back.labels is None) == (not labels)
        assert back.meta == table.meta and back.classes == table.classes
