"""MoCo v3: symmetrised, 2T-scaled in-batch InfoNCE of predicted queries against momentum keys;
keys get no gradient; the momentum encoder (no predictor) follows the formula."""

import pytest
import torch

from contrastlab.losses import moco_v3_info_nce
from contrastlab.methods import build_method
from contrastlab.methods.moco_v3 import MoCoV3
from contrastlab.models import build_backbone
from contrastlab.models.ema import cosine_momentum


def _method(**kwargs) -> MoCoV3:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "prediction_hidden_dim": 16}
    options.update(kwargs)
    return MoCoV3(build_backbone("convnet-small", 1), **options)


def _views(n: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(n)
    return [torch.randn(n, 1, 8, 8, generator=generator) for _ in range(2)]


def test_loss_is_ctr_q1_k2_plus_ctr_q2_k1() -> None:
    method = _method(temperature=0.5).train()
    x1, x2 = _views()
    out = method.training_step([x1, x2], None)
    # recomputed independently: one forward per view, as in training_step (same BN stats)
    q1 = method.prediction_head(method.projection_head(method.backbone(x1)))
    q2 = method.prediction_head(method.projection_head(method.backbone(x2)))
    with torch.no_grad():
        k1 = method.momentum_projection_head(method.momentum_backbone(x1))
        k2 = method.momentum_projection_head(method.momentum_backbone(x2))
    expected = moco_v3_info_nce(q1, k2, 0.5) + moco_v3_info_nce(q2, k1, 0.5)
    torch.testing.assert_close(out.loss, expected)


def test_keys_get_no_gradient_and_momentum_encoder_follows_formula() -> None:
    method = _method(ema_momentum=0.8, ema_cosine=False).train()
    out = method.training_step(_views(), None)
    out.loss.backward()
    for module in (method.momentum_backbone, method.momentum_projection_head):
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    assert not hasattr(method, "momentum_prediction_head")
    with torch.no_grad():
        for p in method.projection_head.parameters():
            p.mul_(1.5)
    before = [p.clone() for p in method.momentum_projection_head.parameters()]
    method.on_step_end(0, 0.3, out)
    for old, new, theta in zip(before, method.momentum_projection_head.parameters(),
                               method.projection_head.parameters(), strict=True):
        torch.testing.assert_close(new, 0.8 * old + 0.2 * theta)


def test_defaults_cosine_momentum_and_state_dict() -> None:
    method = build_method("moco-v3", "convnet-small", 1)
    assert (method.temperature, method.ema_momentum, method.ema_cosine) == (0.2, 0.99, True)
    method.on_step_start(10, 0.25)
    assert method.current_ema_momentum() == pytest.approx(cosine_momentum(0.99, 0.25))
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 256)
    state = method.state_dict()
    assert any(k.startswith("momentum_backbone.") for k in state)
    assert any(k.startswith("momentum_projection_head.") for k in state)
    restored = build_method("moco-v3", "convnet-small", 1)
    restored.load_state_dict(state)
    for a, b in zip(restored.momentum_backbone.parameters(),
                    method.momentum_backbone.parameters(), strict=True):
        assert torch.equal(a, b)
