"""Fine-tuning evaluation: a copy of the encoder + a new linear head on the labelled fraction."""

from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.data import ImageDataset, load_dataset
from contrastlab.errors import ConfigError
from contrastlab.eval.finetune import FinetuneSettings, finetune, finetune_run
from contrastlab.eval.runs import load_run
from contrastlab.eval.threads import single_thread_if_small


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "run"
    config = build_config(None, {"data": "digits", "epochs": 1, "batch_size": 64,
                                 "backbone": "convnet-small", "projection_hidden_dim": 32,
                                 "projection_dim": 16, "out": str(out)})
    with single_thread_if_small(0):  # tiny steps: one thread is faster on a busy CPU
        train(config, console=Console(quiet=True), stop_after_step=2, evaluate_at_end=False)
    return out


def test_finetune_learns_from_the_labelled_fraction(tiny_run: Path) -> None:
    settings = FinetuneSettings(epochs=15, lr=0.1, batch_size=32)
    scores = finetune_run(tiny_run, label_fraction=0.1, settings=settings)
    assert scores["n_train"] == 144 and scores["n_test"] == 360
    assert scores["label_fraction"] == 0.1 and scores["finetune_epochs"] == 15
    assert scores["finetune_steps"] == 15 * 5  # 144 images in batches of at most 32
    assert scores["finetune_top1"] > 0.5  # 10 classes: chance is 0.1
    assert scores["finetune_top1"] <= scores["finetune_top5"] <= 1.0


def test_finetune_trains_a_copy(tiny_run: Path) -> None:
    loaded = load_run(tiny_run)
    before = {k: v.clone() for k, v in loaded.method.state_dict().items()}
    splits = load_dataset("digits", test_fraction=0.2, split_seed=0)
    assert splits.test is not None
    finetune(loaded.method, splits.train.subset(range(200)), splits.test, loaded.transform,
             FinetuneSettings(epochs=1, lr=0.5))
    after = loaded.method.state_dict()  # weights and batch-norm statistics unchanged
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not loaded.method.training


def test_finetune_is_seeded_and_supports_projector(tiny_run: Path) -> None:
    settings = FinetuneSettings(epochs=2, batch_size=64, seed=3)
    one = finetune_run(tiny_run, label_fraction=0.05, settings=settings, features="projector")
    two = finetune_run(tiny_run, label_fraction=0.05, settings=settings, features="projector")
    assert one == two and one["features"] == "projector"


def test_default_epochs_aim_for_about_300_steps() -> None:
    settings = FinetuneSettings()
    assert settings.resolved_epochs(2) == 100  # 1% of MNIST at batch 64: capped at 100 epochs
    assert settings.resolved_epochs(13) == 24
    assert settings.resolved_epochs(125) == 10
    assert FinetuneSettings(epochs=3).resolved_epochs(125) == 3


def test_no_top5_below_five_classes(tiny_run: Path) -> None:
    loaded = load_run(tiny_run)
    splits = load_dataset("digits", test_fraction=0.2, split_seed=0)
    assert splits.test is not None

    def first_classes(data: ImageDataset) -> ImageDataset:
        assert data.labels is not None
        return data.subset((data.labels < 3).nonzero().flatten())

    scores = finetune(loaded.method, first_classes(splits.train), first_classes(splits.test),
                      loaded.transform, FinetuneSettings(epochs=1))
    assert "finetune_top5" not in scores and 0 <= scores["finetune_top1"] <= 1


@pytest.mark.parametrize(
    "settings,message",
    [
        (FinetuneSettings(epochs=0), "--epochs"),
        (FinetuneSettings(lr=-1.0), "--lr"),
        (FinetuneSettings(batch_size=1), "--batch-size"),
    ],
)
def test_bad_settings(tiny_run: Path, settings: FinetuneSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        finetune_run(tiny_run, settings=settings)


def test_bad_fraction_and_features(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="--label-fraction"):
        finetune_run(tiny_run, label_fraction=0.0)
    with pytest.raises(ConfigError, match="projecter"):
        finetune_run(tiny_run, features="projecter")
