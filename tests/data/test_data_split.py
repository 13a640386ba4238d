"""Tests of the seeded stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastlab.data import stratified_split
from contrastlab.data.dataset import ImageDataset
from contrastlab.data.split import split_dataset
from contrastlab.errors import DataError


def _labels() -> np.ndarray:
    return np.repeat(np.arange(4), [50, 30, 15, 5])


def test_split_is_deterministic_disjoint_and_complete() -> None:
    labels = _labels()
    train, test = stratified_split(labels, 0.2, 7)
    again_train, again_test = stratified_split(labels, 0.2, 7)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    assert len(test) == 20


def test_split_keeps_class_proportions() -> None:
    labels = _labels()
    _, test = stratified_split(labels, 0.2, 0)
    counts = np.bincount(labels[test], minlength=4)
    np.testing.assert_array_equal(counts, [10, 6, 3, 1])


def test_another_seed_gives_another_split() -> None:
    labels = _labels()
    _, first = stratified_split(labels, 0.2, 0)
    _, second = stratified_split(labels, 0.2, 1)
    assert not np.array_equal(first, second)


def test_split_accepts_tensors_and_lists() -> None:
    labels = _labels()
    from_tensor = stratified_split(torch.from_numpy(labels), 0.25, 3)
    from_list = stratified_split(labels.tolist(), 0.25, 3)
    np.testing.assert_array_equal(from_tensor[1], from_list[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.2", True])
def test_bad_fraction_is_refused(fraction: object) -> None:
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(_labels(), fraction, 0)  # type: ignore[arg-type]


def test_class_with_one_item_is_explained() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    with pytest.raises(DataError, match="class 1 has only 1 image"):
        stratified_split(labels, 0.4, 0)


def test_too_small_test_side_is_explained() -> None:
    labels = np.repeat(np.arange(10), 2)
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(labels, 0.1, 0)


@settings(max_examples=25, deadline=None, database=None)
@given(
    counts=st.lists(st.integers(min_value=4, max_value=30), min_size=2, max_size=5),
    fraction=st.floats(min_value=0.25, max_value=0.75),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_split_properties(counts: list[int], fraction: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    train, test = stratified_split(labels, fraction, seed)
    assert len(train) + len(test) == len(labels)
    assert set(train.tolist()).isdisjoint(test.tolist())
    for label, count in enumerate(counts):
        in_test = int(np.sum(labels[test] == label))
        # sklearn rounds the test size up, then shares it out: each class is within 2 of exact.
        assert abs(in_test - count * fraction) <= 2.0
        assert np.sum(labels[train] == label) >= 1


def test_split_dataset_unlabeled_and_labelled() -> None:
    images = torch.zeros((10, 1, 2, 2), dtype=torch.uint8)
    ids = [f"x:{i}" for i in range(10)]
    unlabeled = split_dataset(
        ImageDataset(images, None, None, ids), test_fraction=0.2, split_seed=0
    )
    assert unlabeled.test is None and len(unlabeled.train) == 10
    assert not unlabeled.official_split
    labels = torch.tensor([0, 1] * 5)
    labelled = split_dataset(
        ImageDataset(images, labels, ["a", "b"], ids), test_fraction=0.2, split_seed=0
    )
    assert labelled.test is not None
    assert len(labelled.train) == 8 and len(labelled.test) == 2
    assert sorted(labelled.test.labels.tolist()) == [0, 1]
