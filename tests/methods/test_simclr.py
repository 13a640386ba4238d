import pytest
import torch

from contrastlab.losses import nt_xent
from contrastlab.methods import SimCLR, build_method, list_methods
from contrastlab.models import build_backbone


def test_training_step_is_nt_xent_of_projected_views() -> None:
    torch.manual_seed(0)
    method = SimCLR(build_backbone("convnet-small", 1), temperature=0.3, projection_dim=8,
                    projection_hidden_dim=16)
    v1, v2 = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    out = method.training_step([v1, v2], None)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    torch.testing.assert_close(out.loss, nt_xent(z[:6], z[6:], 0.3))
    out.loss.backward()
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)


def test_encode_returns_backbone_features_and_project_the_head() -> None:
    method = build_method("simclr", "convnet-small", 3, projection_dim=8,
                          projection_hidden_dim=16).eval()
    x = torch.randn(3, 3, 16, 16)
    assert method.encode(x).shape == (3, method.feature_dim)
    assert method.project(x).shape == (3, 8)


def test_wrong_number_of_views() -> None:
    method = build_method("simclr", "convnet-small", 1)
    with pytest.raises(ValueError, match="exactly 2 views"):
        method.training_step([torch.randn(4, 1, 8, 8)] * 3, None)
    assert "simclr" in list_methods()
