"""FAISS indexes against a brute-force cosine search written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss", reason="the serve extra is not installed")

from contrastlab.errors import ConfigError, DataError  # noqa: E402
from contrastlab.serve.index import (  # noqa: E402
    IndexParams,
    build_index,
    check_compatible,
    default_nlist,
    load_index,
)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by cos(q, x) = q.x / (|q| |x|), one query at a time, in float64."""
    rows, scores = [], []
    for q in queries.astype(np.float64):
        cos = np.array([q @ x / (np.linalg.norm(q) * np.linalg.norm(x))
                        for x in vectors.astype(np.float64)])
        order = np.argsort(-cos, kind="stable")[:k]
        rows.append(order)
        scores.append(cos[order])
    return np.array(rows), np.array(scores)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))) \
        .astype(np.float32) * rng.uniform(0.5, 3.0, (n, 1)).astype(np.float32)


def test_flat_search_equals_brute_force_cosine() -> None:
    vectors, queries = clustered(300, 16, 0), clustered(12, 16, 1)
    index = build_index(vectors, [f"id{i}" for i in range(300)], "flat")
    expected_rows, expected_scores = brute_force(vectors, queries, 7)
    results = index.search(queries, 7)
    for hits, rows, scores in zip(results, expected_rows, expected_scores, strict=True):
        assert [h.id for h in hits] == [f"id{r}" for r in rows]
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, 8))


def test_ivf_visiting_every_cell_is_exact_and_default_recall_is_high() -> None:
    vectors, queries = clustered(2000, 16, 2), clustered(50, 16, 3)
    expected, _ = brute_force(vectors, queries, 10)
    index = build_index(vectors, kind="ivf")
    assert index.params.nlist == default_nlist(2000) == 51  # 2000 // 39 caps 4 sqrt(2000)
    index.set_search_params(nprobe=index.params.nlist)
    _, rows = index.search_arrays(queries, 10)
    assert np.array_equal(rows, expected)
    index.set_search_params(nprobe=8)
    _, rows = index.search_arrays(queries, 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, expected, strict=True)])
    assert recall >= 0.9


def test_hnsw_recall_against_brute_force() -> None:
    vectors, queries = clustered(1500, 16, 4), clustered(50, 16, 5)
    expected, _ = brute_force(vectors, queries, 10)
    index = build_index(vectors, kind="hnsw", params=IndexParams(hnsw_m=16, ef_search=128))
    _, rows = index.search_arrays(queries, 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, expected, strict=True)])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    vectors = clustered(400, 8, 6)
    labels = np.arange(400) % 3
    index = build_index(vectors, [f"x{i}" for i in range(400)], kind, labels,
                        meta={"features": "backbone", "embedding_dim": 8})
    index.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx")
    assert back.kind == kind and len(back) == 400 and back.dim == 8
    assert back.meta["features"] == "backbone"
    queries = clustered(5, 8, 7)
    before, after = index.search(queries, 5), back.search(queries, 5)
    assert [[h.id for h in q] for q in before] == [[h.id for h in q] for q in after]
    assert after[0][0].label == int(after[0][0].id[1:]) % 3


def test_k_larger_than_the_index_returns_everything() -> None:
    index = build_index(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    hits = index.search(np.array([[1.0, 0.1, 0.0]], dtype=np.float32), 10)[0]
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert hits[0].score == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown index kind 'ivff'"):
        build_index(np.ones((4, 2), dtype=np.float32), kind="ivff")
    with pytest.raises(DataError, match="NaN"):
        build_index(np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(DataError, match="2 vectors but 1 ids"):
        build_index(np.ones((2, 2), dtype=np.float32), ["a"])
    with pytest.raises(ConfigError, match="nlist 10 is larger"):
        build_index(np.ones((4, 2), dtype=np.float32), kind="ivf", params=IndexParams(nlist=10))
    index = build_index(np.ones((4, 2), dtype=np.float32))
    with pytest.raises(DataError, match="dimension 3"):
        index.search(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="k must be >= 1"):
        index.search(np.ones((1, 2), dtype=np.float32), 0)
    with pytest.raises(DataError, match="not an index folder"):
        load_index(tmp_path)


def test_check_compatible() -> None:
    index = build_index(np.ones((4, 2), dtype=np.float32),
                        meta={"features": "backbone", "backbone": "convnet"})
    check_compatible(index, {"embedding_dim": 2, "features": "backbone"}, "here")
    with pytest.raises(ConfigError, match="3-dimensional embeddings"):
        check_compatible(index, {"embedding_dim": 3}, "here")
    with pytest.raises(ConfigError, match="features 'backbone'"):
        check_compatible(index, {"embedding_dim": 2, "features": "projector"}, "here")
