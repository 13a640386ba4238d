"""kNN over a feature bank larger than the memory cap: features spilled to a temporary file
(eval/feature_store.py) and searched block by block (eval/knn_blocked.py) give the neighbours,
votes and accuracy of the search in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastlab.data import ImageDataset
from contrastlab.errors import ConfigError
from contrastlab.eval import knn_accuracy, knn_blocked, knn_predict
from contrastlab.eval.feature_store import (
    FOLDER_VARIABLE,
    MEMORY_VARIABLE,
    FeatureStore,
    max_feature_memory,
)
from contrastlab.eval.features import extract_features
from contrastlab.eval.knn_blocked import block_sizes, blocked_top_k, faiss_module

BACKENDS = [pytest.param(True, id="faiss"), pytest.param(False, id="torch")]


def _features(seed: int, rows: int, dim: int = 8) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_blocks_find_the_neighbours_of_one_search(use_faiss: bool) -> None:
    if use_faiss and faiss_module() is None:
        pytest.skip("faiss is not installed")
    bank, queries = _features(0, 300), _features(1, 50)
    cap = 2048
    assert block_sizes(8, 5, cap) == (8, 5)  # 38 blocks of the bank, 10 chunks of queries
    found = list(blocked_top_k(bank, queries, 5, cap, use_faiss=use_faiss))
    assert [first for first, _, _ in found] == list(range(0, 50, 5))
    similarity = torch.cat([s for _, s, _ in found])
    rows = torch.cat([r for _, _, r in found])
    direct = torch.nn.functional.normalize(queries, dim=1) @ \
        torch.nn.functional.normalize(bank, dim=1).t()
    want = direct.topk(5, dim=1)
    assert torch.equal(rows, want.indices)
    assert torch.allclose(similarity, want.values, atol=1e-6)


@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_blocked_knn_predicts_as_in_memory(use_faiss: bool, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    if not use_faiss:
        monkeypatch.setattr("contrastlab.eval.knn_blocked.faiss_module", lambda: None)
    elif faiss_module() is None:
        pytest.skip("faiss is not installed")
    centres = _features(2, 4, 16) * 3
    labels = torch.arange(400) % 4
    bank = centres[labels] + _features(3, 400, 16)
    test_labels = torch.arange(120) % 4
    queries = centres[test_labels] + _features(4, 120, 16)
    searches: list[int] = []
    search = knn_blocked.blocked_top_k
    monkeypatch.setattr("contrastlab.eval.knn.blocked_top_k",
                        lambda *args, **kw: searches.append(1) or search(*args, **kw))
    for k, temperature in ((1, 0.1), (20, 0.07), (200, 0.5)):
        memory = knn_predict(bank, labels, queries, k, temperature)
        # 16 KiB: 13 blocks of 32 bank rows (the features take 33,280 bytes)
        blocked = knn_predict(bank, labels, queries, k, temperature, max_memory=16384)
        assert torch.equal(memory, blocked)
    # with one neighbour the prediction is that neighbour's label: votes cannot hide a mismatch
    mixed = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(knn_predict(bank, mixed, queries, 1),
                       knn_predict(bank, mixed, queries, 1, max_memory=16384))
    assert knn_accuracy(bank, labels, queries, test_labels, 20, max_memory=16384) == \
        knn_accuracy(bank, labels, queries, test_labels, 20)
    assert len(searches) == 5  # the capped calls searched in blocks, the others in memory


def test_features_over_the_cap_live_in_a_file_that_is_gone(tmp_path: Path) -> None:
    store = FeatureStore(10, 4, max_memory=100, folder=tmp_path)  # 160 bytes > 100
    assert store.spilled
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped
    store.add(torch.arange(24, dtype=torch.float32).reshape(6, 4))
    store.add(torch.ones(2, 4))
    result = store.result()
    assert result.shape == (8, 4) and result[5, 3] == 23 and result[7, 0] == 1
    assert not FeatureStore(10, 4, max_memory=160).spilled


def test_extract_features_spills_the_same_values(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    dataset = ImageDataset(images, None, None, [str(i) for i in range(50)], "tiny")
    weights = _features(6, 16, 5)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ weights

    memory = extract_features(encode, dataset, lambda x: x.float() / 255, batch_size=16)
    assert not _mapped_feature_files()
    monkeypatch.setenv(FOLDER_VARIABLE, str(tmp_path))
    monkeypatch.setenv(MEMORY_VARIABLE, "999")  # 50 x 5 float32 = 1,000 bytes: over the cap
    spilled = extract_features(encode, dataset, lambda x: x.float() / 255, batch_size=16)
    assert torch.equal(memory, spilled)
    assert _mapped_feature_files() == 1 and list(tmp_path.iterdir()) == []
    del spilled
    assert not _mapped_feature_files()


def _mapped_feature_files() -> int:
    """Temporary feature files mapped into this process (from /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps (Linux)")
    return len({line.split()[-2] for line in maps.read_text().splitlines()
                if "contrastlab-features-" in line})


def test_the_cap_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_VARIABLE, "lots")
    with pytest.raises(ConfigError, match=f"{MEMORY_VARIABLE} 'lots' is not a size"):
        max_feature_memory()
    monkeypatch.delenv(MEMORY_VARIABLE)
    assert max_feature_memory() == 2 * 2**30
    assert max_feature_memory("512MB") == 512 * 10**6
