"""BYOL: symmetrised normalised MSE between online predictions and EMA target projections; the
target gets no gradient; tau follows 0.996 -> 1 on a cosine; the target is in the state dict."""

import pytest
import torch

from contrastlab.losses import byol_loss
from contrastlab.methods import build_method
from contrastlab.methods.base import StepOutput
from contrastlab.methods.byol import BYOL
from contrastlab.models import build_backbone
from contrastlab.models.ema import cosine_momentum


def _method(**kwargs) -> BYOL:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "prediction_hidden_dim": 16}
    options.update(kwargs)
    return BYOL(build_backbone("convnet-small", 1), **options)


def _views(n: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(n)
    return [torch.randn(n, 1, 8, 8, generator=generator) for _ in range(2)]


def test_loss_is_symmetrised_normalised_mse_and_target_gets_no_gradient() -> None:
    method = _method().train()
    x1, x2 = _views()
    out = method.training_step([x1, x2], None)
    both = torch.cat([x1, x2])
    p = method.prediction_head(method.projection_head(method.backbone(both)))
    with torch.no_grad():
        t = method.target_projection_head(method.target_backbone(both))
    torch.testing.assert_close(out.loss, byol_loss(p[:6], p[6:], t[:6], t[6:]))
    out.loss.backward()
    for module in (method.target_backbone, method.target_projection_head):
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)


def test_target_update_follows_cosine_schedule() -> None:
    method = _method()
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.target_backbone.parameters()]
    method.on_step_start(3, 0.4)
    tau = method.current_ema_momentum()
    assert tau == pytest.approx(cosine_momentum(0.996, 0.4))
    method.on_step_end(3, 0.4, StepOutput(loss=torch.zeros(())))  # BYOL needs no after_step
    for old, new, theta in zip(before, method.target_backbone.parameters(),
                               method.backbone.parameters(), strict=True):
        torch.testing.assert_close(new, tau * old + (1 - tau) * theta)
    constant = _method(ema_momentum=0.9, ema_cosine=False)
    constant.on_step_start(0, 0.7)
    assert constant.current_ema_momentum() == 0.9


def test_defaults_and_state_dict_round_trip() -> None:
    method = build_method("byol", "convnet-small", 1)
    assert (method.ema_momentum, method.ema_cosine) == (0.996, True)
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 256)
    method.on_step_end(0, 0.0, StepOutput(loss=torch.zeros(())))
    state = method.state_dict()
    assert any(k.startswith("target_backbone.") for k in state)
    restored = build_method("byol", "convnet-small", 1)
    restored.load_state_dict(state)
    for a, b in zip(restored.target_projection_head.parameters(),
                    method.target_projection_head.parameters(), strict=True):
        assert torch.equal(a, b)
