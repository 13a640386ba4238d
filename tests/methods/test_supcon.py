"""SupCon method: labels make same-class views positives; refused on unlabelled data."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.losses import nt_xent, supcon_loss, supcon_loss_views
from contrastlab.methods import build_method
from contrastlab.methods.supcon import SupCon
from contrastlab.models import build_backbone


def test_training_step_is_supcon_of_the_projected_views_with_labels() -> None:
    torch.manual_seed(0)
    method = SupCon(build_backbone("convnet-small", 1), temperature=0.2, projection_dim=8,
                    projection_hidden_dim=16)
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    out = method.training_step([v1, v2], labels)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    torch.testing.assert_close(out.loss, supcon_loss(z[:6], z[6:], labels, 0.2))
    without_labels = method.training_step([v1, v2], None)
    torch.testing.assert_close(without_labels.loss, nt_xent(z[:6], z[6:], 0.2))
    assert not torch.allclose(out.loss, without_labels.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_defaults_and_label_flags() -> None:
    method = build_method("supcon", "convnet-small", 1)
    assert method.temperature == 0.1 and method.uses_labels and not method.needs_labels
    with pytest.raises(ValueError, match="exactly 2 views"):
        method.training_step([torch.randn(4, 1, 8, 8)], torch.zeros(4, dtype=torch.long))


def test_trainer_refuses_unlabelled_data_and_points_to_simclr(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
            folder / f"{i}.png")
    config = build_config(None, {"method": "supcon", "data": str(folder), "batch_size": 4,
                                 "epochs": 1, "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="--method simclr"):
        train(config, console=Console(quiet=True), evaluate_at_end=False)


def test_one_view_per_image_uses_labels_alone() -> None:
    torch.manual_seed(3)
    method = SupCon(build_backbone("convnet-small", 1), temperature=0.2, projection_dim=8,
                    projection_hidden_dim=16, num_views=1)
    images, labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 0, 2, 1, 0])
    out = method.training_step([images], labels)
    z = method.projection_head(method.backbone(images))
    torch.testing.assert_close(out.loss, supcon_loss_views([z], labels, 0.2))
    with pytest.raises(ValueError, match="exactly 1 views"):
        method.training_step([images, images], labels)
    with pytest.raises(ConfigError, match="num_views"):
        SupCon(build_backbone("convnet-small", 1), num_views=0)


def test_trainer_builds_the_configured_number_of_views(tmp_path: Path) -> None:
    from contrastlab.runs import build_views

    one = build_config(None, {"method": "supcon", "num_views": 1, "out": str(tmp_path)})
    assert build_views(one, 8, 1, (0.5,), (0.5,)).num_views == 1
    default = build_config(None, {"method": "supcon", "out": str(tmp_path)})
    assert build_views(default, 8, 1, (0.5,), (0.5,)).num_views == 2
    with pytest.raises(ConfigError, match="num_views is not a setting of method 'simclr'"):
        build_config(None, {"method": "simclr", "num_views": 1, "out": str(tmp_path)})
