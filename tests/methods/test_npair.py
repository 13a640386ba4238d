"""N-pair method: the loss averaged over both view directions on unnormalised embeddings."""

import pytest
import torch
from torch import nn

from contrastlab.losses import npair_loss
from contrastlab.methods import build_method
from contrastlab.methods.npair import NPair
from contrastlab.models import build_backbone


def test_training_step_is_the_symmetrised_npair_loss() -> None:
    torch.manual_seed(0)
    method = NPair(build_backbone("convnet-small", 1), projection_dim=8, projection_hidden_dim=16,
                   l2_weight=0.01)
    assert not isinstance(method.projection_head.layers[-1], nn.BatchNorm1d)
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    out = method.training_step([v1, v2], None)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    expected = (npair_loss(z[:6], z[6:], 0.01) + npair_loss(z[6:], z[:6], 0.01)) / 2
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_shapes_and_errors() -> None:
    method = build_method("npair", "convnet-small", 1, projection_dim=8).eval()
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 8)
    with pytest.raises(ValueError, match="exactly 2 views"):
        method.training_step([torch.randn(4, 1, 8, 8)], None)
