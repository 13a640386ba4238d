"""Supervised baseline: one view, cross-entropy on the labels, num_classes from the data."""

import pytest
import torch
import torch.nn.functional as F

from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.methods import METHODS, build_method
from contrastlab.methods.supervised import Supervised
from contrastlab.models import build_backbone
from contrastlab.runs import build_views
from contrastlab.runs.meta import method_settings_for_data


def test_training_step_is_cross_entropy_of_one_view() -> None:
    torch.manual_seed(0)
    method = Supervised(build_backbone("convnet-small", 1), num_classes=4)
    view, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 1, 0])
    out = method.training_step([view], labels)
    logits = method.classifier(method.backbone(view))
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, labels))
    assert 0.0 <= out.metrics["train_accuracy"] <= 1.0
    assert method.project(view).shape == (6, 4)
    out.loss.backward()
    assert all(p.grad is not None for p in method.parameters())


def test_flags_and_errors() -> None:
    assert METHODS["supervised"].num_views == 1 and METHODS["supervised"].needs_labels
    method = build_method("supervised", "convnet-small", 1, num_classes=3)
    with pytest.raises(ValueError, match="1 view"):
        method.training_step([torch.randn(2, 1, 8, 8)] * 2, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs labels"):
        method.training_step([torch.randn(2, 1, 8, 8)], None)
    with pytest.raises(ConfigError, match="num_classes"):
        build_method("supervised", "convnet-small", 1, num_classes=1)


def test_trainer_passes_the_number_of_classes_and_makes_one_view(tmp_path) -> None:
    from contrastlab.data import load_dataset

    config = build_config(None, {"method": "supervised", "out": str(tmp_path / "run")})
    splits = load_dataset("digits")
    assert method_settings_for_data(config, splits).num_classes == 10
    views = build_views(config, 8, 1, (0.5,), (0.25,))
    assert len(views(splits.train.images[:4], torch.Generator().manual_seed(0))) == 1
