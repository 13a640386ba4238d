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


def test_projection_layers_zero_puts_the_loss_on_the_backbone_features() -> None:
    """SimCLR without its projection head (the paper's "none", Fig. 8): z = h = f(x)."""
    torch.manual_seed(0)
    method = SimCLR(build_backbone("convnet-small", 1), temperature=0.3, projection_layers=0)
    assert not any(name.startswith("projection_head") for name, _ in method.named_parameters())
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    out = method.training_step([v1, v2], None)
    h = method.backbone(torch.cat([v1, v2]))
    torch.testing.assert_close(out.loss, nt_xent(h[:6], h[6:], 0.3))
    torch.testing.assert_close(method.project(v1), method.encode(v1))
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_projection_layers_one_is_linear_and_two_is_the_default_mlp() -> None:
    linear = build_method("simclr", "convnet-small", 1, projection_layers=1, projection_dim=8)
    layers = [m for m in linear.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 1 and layers[0].out_features == 8
    default = build_method("simclr", "convnet-small", 1)
    assert default.settings.projection_layers == 2
    assert sum(isinstance(m, torch.nn.Linear) for m in default.projection_head.modules()) == 2
    with pytest.raises(Exception, match="projection_layers must be >= 0"):
        build_method("simclr", "convnet-small", 1, projection_layers=-1)
