"""Transfer evaluation: the frozen encoder on a second dataset, and a probe carried across."""

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.data import ImageDataset
from contrastlab.errors import DataError
from contrastlab.eval.threads import single_thread_if_small
from contrastlab.eval.transfer import align_labels, transfer_run


def dataset(classes: list[str] | None, labels: list[int]) -> ImageDataset:
    n = len(labels)
    return ImageDataset(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.tensor(labels),
                        classes, [str(i) for i in range(n)], "toy")


def test_align_labels_by_name_count_or_error() -> None:
    target = dataset(["cat", "dog", "fox"], [0, 1, 2])
    same = dataset(["cat", "dog", "fox"], [2, 0, 1])
    assert align_labels(same, target, "a", "b").tolist() == [2, 0, 1]
    permuted = dataset(["fox", "cat", "dog"], [0, 1, 2, 0])
    assert align_labels(permuted, target, "a", "b").tolist() == [2, 0, 1, 2]
    with pytest.raises(DataError, match="different classes.*'owl'"):
        align_labels(dataset(["cat", "dog", "owl"], [0, 1, 2]), target, "a", "b")
    unnamed = dataset(None, [0, 1, 2, 1])
    assert align_labels(unnamed, dataset(None, [2, 1, 0]), "a", "b").tolist() == [0, 1, 2, 1]
    with pytest.raises(DataError, match="--probe-data 'a' has 2 classes but --data 'b' has 3"):
        align_labels(dataset(None, [0, 1]), dataset(None, [0, 1, 2]), "a", "b")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("transfer") / "run"
    config = build_config(None, {"data": "digits", "epochs": 1, "batch_size": 64,
                                 "backbone": "convnet-small", "projection_hidden_dim": 32,
                                 "projection_dim": 16, "out": str(out)})
    with single_thread_if_small(0):  # tiny steps: one thread is faster on a busy CPU
        train(config, console=Console(quiet=True), stop_after_step=2, evaluate_at_end=False)
    return out


def digits_npz(path: Path, scale: int = 1, rgb: bool = False, classes: int = 10,
               count: int = 500) -> str:
    """The first ``count`` digits (of the first ``classes`` classes), upscaled ``scale`` times by
    pixel repetition (another image size), as an .npz dataset."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.flatnonzero(bunch.target < classes)[:count]
    images = np.rint(bunch.images[keep] * 255 / 16).astype(np.uint8)
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    if rgb:
        images = np.stack([images] * 3, axis=-1)
    names = np.array([str(i) for i in range(10)][:classes])
    np.savez(path, x=images, y=bunch.target[keep], classes=names)
    return str(path)


def test_transfer_to_other_size_with_probe_from_run_data(tiny_run: Path, tmp_path: Path) -> None:
    big = digits_npz(tmp_path / "digits16.npz", scale=2)
    result = transfer_run(tiny_run, big, probe_data="digits", k=20)
    assert result["data"] == big and result["probe_data"] == "digits"
    for key in ("knn_top1", "linear_top1", "cross_knn_top1", "cross_linear_top1"):
        assert 0.3 < result[key] <= 1.0, key  # 10 classes: chance is 0.1
    assert result["n_train"] == 400 and result["n_test"] == 100
    assert result["n_probe_train"] == 1437
    assert "cross_k" not in result and "cross_linear_C" in result
    # the 16 px images are resized to the encoder's 8 px by the run's EvalTransform: the same
    # images at their own size (same labels, so the same split) score about the same
    same = transfer_run(tiny_run, digits_npz(tmp_path / "digits8.npz"), protocols=("knn",), k=20)
    assert abs(result["knn_top1"] - same["knn_top1"]) <= 0.1


def test_transfer_refuses_other_channels_and_label_spaces(tiny_run: Path, tmp_path: Path) -> None:
    rgb = digits_npz(tmp_path / "rgb.npz", rgb=True)
    with pytest.raises(DataError, match="3-channel images but the encoder was trained on 1"):
        transfer_run(tiny_run, rgb)
    three = digits_npz(tmp_path / "three.npz", classes=3)
    with pytest.raises(DataError, match="different classes"):
        transfer_run(tiny_run, three, probe_data="digits")
    result = transfer_run(tiny_run, three, protocols=("knn",), k=5, features="projector")
    assert 0.4 < result["knn_top1"] <= 1.0  # 3 classes
    assert set(result) == {"data", "knn_top1", "k", "n_train", "n_test", "features"}
