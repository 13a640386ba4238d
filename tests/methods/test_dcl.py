"""DCL and DCLW methods: SimCLR's architecture with the decoupled loss (DCLW: weighted)."""

import pytest
import torch

from contrastlab.config import build_config
from contrastlab.errors import ConfigError
from contrastlab.losses import dcl_loss
from contrastlab.methods import build_method
from contrastlab.methods.dcl import DCL
from contrastlab.methods.dclw import DCLW
from contrastlab.models import build_backbone


@pytest.mark.parametrize("cls,sigma", [(DCL, None), (DCLW, 0.7)])
def test_training_step_is_the_decoupled_loss_of_the_projected_views(cls, sigma) -> None:
    torch.manual_seed(0)
    kwargs = {"weight_sigma": sigma} if sigma is not None else {}
    method = cls(build_backbone("convnet-small", 1), temperature=0.3, projection_dim=8,
                 projection_hidden_dim=16, **kwargs)
    v1, v2 = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    out = method.training_step([v1, v2], None)
    z = method.projection_head(method.backbone(torch.cat([v1, v2])))
    torch.testing.assert_close(out.loss, dcl_loss(z[:6], z[6:], 0.3, sigma))
    out.loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_defaults_names_and_config_keys(tmp_path) -> None:
    dcl, dclw = build_method("dcl", "convnet-small", 1), build_method("dclw", "convnet-small", 1)
    assert dcl.temperature == dclw.temperature == 0.1 and dclw.weight_sigma == 0.5
    assert dcl.weight_sigma_or_none() is None
    build_config(None, {"method": "dclw", "weight_sigma": 0.3, "out": str(tmp_path / "a")})
    with pytest.raises(ConfigError, match="weight_sigma is not a setting of method 'dcl'"):
        build_config(None, {"method": "dcl", "weight_sigma": 0.3, "out": str(tmp_path / "b")})
    with pytest.raises(ConfigError, match="weight_sigma"):
        DCLW(build_backbone("convnet-small", 1), weight_sigma=0.0)
