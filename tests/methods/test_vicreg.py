"""VICReg method: the 3-layer expander, the weighted terms on the two views."""

import pytest
import torch
from torch import nn

from contrastlab.losses import vicreg_loss
from contrastlab.methods import build_method
from contrastlab.methods.vicreg import VICReg
from contrastlab.models import build_backbone


def test_training_step_is_the_weighted_loss_of_the_projected_views() -> None:
    torch.manual_seed(0)
    method = VICReg(build_backbone("convnet-small", 1), projection_dim=16,
                    projection_hidden_dim=32, invariance_weight=2.0, variance_weight=3.0,
                    covariance_weight=4.0)
    linear_layers = [m for m in method.projection_head.modules() if isinstance(m, nn.Linear)]
    assert len(linear_layers) == 3
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    out = method.training_step([v1, v2], None)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    torch.testing.assert_close(out.loss, vicreg_loss(z[:6], z[6:], 2.0, 3.0, 4.0))
    assert set(out.metrics) == {"invariance", "variance", "covariance"}
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_defaults_shapes_and_errors() -> None:
    method = build_method("vicreg", "convnet-small", 3, projection_dim=8,
                          projection_hidden_dim=16).eval()
    assert (method.invariance_weight, method.variance_weight, method.covariance_weight) == (
        25.0, 25.0, 1.0)
    x = torch.randn(3, 3, 8, 8)
    assert method.project(x).shape == (3, 8)
    with pytest.raises(ValueError, match="exactly 2 views"):
        method.training_step([x, x, x], None)
