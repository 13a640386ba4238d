"""Triplet method: views of one image are positives, other images' views negatives."""

import pytest
import torch

from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.losses import triplet_loss
from contrastlab.methods import build_method
from contrastlab.methods.triplet import Triplet
from contrastlab.models import build_backbone


@pytest.mark.parametrize("mining", ["batch-hard", "semi-hard"])
@pytest.mark.parametrize("num_views", [2, 3])
def test_training_step_is_the_triplet_loss_with_image_identities(mining, num_views) -> None:
    torch.manual_seed(0)
    method = Triplet(build_backbone("convnet-small", 1), margin=0.5, mining=mining,
                     projection_dim=8, projection_hidden_dim=16)
    views = [torch.randn(5, 1, 8, 8) for _ in range(num_views)]
    out = method.training_step(views, torch.zeros(5, dtype=torch.long))  # labels are ignored
    z = method.projection_head(method.backbone(torch.cat(views)))
    ids = torch.arange(5).repeat(num_views)
    torch.testing.assert_close(out.loss, triplet_loss(z, ids, 0.5, mining))
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_defaults_config_keys_and_errors(tmp_path) -> None:
    method = build_method("triplet", "convnet-small", 1)
    assert (method.margin, method.mining) == (0.2, "semi-hard")
    config = build_config(None, {"method": "triplet", "mining": "batch-hard", "margin": 0.3,
                                 "out": str(tmp_path / "run")})
    assert (config.method.mining, config.method.margin) == ("batch-hard", 0.3)
    with pytest.raises(ConfigError, match="mining"):
        build_method("triplet", "convnet-small", 1, mining="hardest")
    with pytest.raises(ValueError, match="at least 2 views"):
        method.training_step([torch.randn(4, 1, 8, 8)], None)
