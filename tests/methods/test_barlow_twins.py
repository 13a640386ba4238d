"""Barlow Twins method: the 3-layer projector, the loss on the two views, lambda = 1/D."""

import pytest
import torch
from torch import nn

from contrastlab.losses import barlow_twins_loss
from contrastlab.methods import build_method
from contrastlab.methods.barlow_twins import BarlowTwins
from contrastlab.models import build_backbone


def test_training_step_is_the_loss_of_the_projected_views() -> None:
    torch.manual_seed(0)
    method = BarlowTwins(build_backbone("convnet-small", 1), projection_dim=16,
                         projection_hidden_dim=32)
    assert method.off_diagonal_weight == pytest.approx(1 / 16)
    linear_layers = [m for m in method.projection_head.modules() if isinstance(m, nn.Linear)]
    assert len(linear_layers) == 3
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    out = method.training_step([v1, v2], None)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    torch.testing.assert_close(out.loss, barlow_twins_loss(z[:6], z[6:], 1 / 16))
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_explicit_lambda_shapes_and_errors() -> None:
    method = build_method("barlow-twins", "convnet-small", 3, projection_dim=8,
                          projection_hidden_dim=16, off_diagonal_weight=0.5).eval()
    assert method.off_diagonal_weight == 0.5
    x = torch.randn(3, 3, 8, 8)
    assert method.encode(x).shape == (3, method.feature_dim)
    assert method.project(x).shape == (3, 8)
    with pytest.raises(ValueError, match="exactly 2 views"):
        method.training_step([x], None)
