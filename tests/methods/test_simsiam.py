"""SimSiam: the loss is D(p1, z2)/2 + D(p2, z1)/2 with the stop-gradient on z, no EMA network."""

import torch

from contrastlab.losses import simsiam_loss
from contrastlab.methods import build_method
from contrastlab.methods.simsiam import SimSiam
from contrastlab.models import build_backbone


def _method() -> SimSiam:
    torch.manual_seed(0)
    return SimSiam(build_backbone("convnet-small", 1), projection_dim=8, projection_hidden_dim=16,
                   prediction_hidden_dim=4)


def test_loss_value_and_stop_gradient_on_the_projection() -> None:
    method = _method().train()
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(6, 1, 8, 8, generator=generator) for _ in range(2))
    out = method.training_step([x1, x2], None)
    z = method.projection_head(method.backbone(torch.cat([x1, x2])))
    z.retain_grad()
    p = method.prediction_head(z)
    loss = simsiam_loss(p[:6], p[6:], z[:6], z[6:])
    torch.testing.assert_close(out.loss, loss)
    loss.backward()
    # z gets gradient only through the predictor: it equals J_h(z)^T dL/dp
    p_leaf = p.detach().requires_grad_(True)
    (grad_p,) = torch.autograd.grad(simsiam_loss(p_leaf[:6], p_leaf[6:], z[:6], z[6:]), p_leaf)
    z2 = z.detach().requires_grad_(True)
    method.zero_grad()
    (through_predictor,) = torch.autograd.grad(method.prediction_head(z2), z2, grad_p)
    torch.testing.assert_close(z.grad, through_predictor)


def test_no_ema_state_and_shapes() -> None:
    method = build_method("simsiam", "convnet-small", 1)
    assert all(p.requires_grad for p in method.parameters())  # nothing frozen, no target net
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 512)
    assert method.prediction_head.layers[0].out_features == 128  # the 4x bottleneck
    assert isinstance(method.projection_head.layers[-1], torch.nn.BatchNorm1d)


def test_without_stop_gradient_the_target_branch_gets_the_gradient_too() -> None:
    """stop_gradient=False (the paper's Sec. 4.1 ablation): the loss value is the same and the
    gradient at z is the full derivative of -cos(p, z)/2 in both arguments."""
    method = _method().train()
    method.settings = method.settings.replace(stop_gradient=False)
    generator = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(6, 1, 8, 8, generator=generator) for _ in range(2))
    out = method.training_step([x1, x2], None)
    z = method.projection_head(method.backbone(torch.cat([x1, x2])))
    p = method.prediction_head(z)
    direct = -0.5 * (torch.nn.functional.cosine_similarity(p[:6], z[6:]).mean()
                     + torch.nn.functional.cosine_similarity(p[6:], z[:6]).mean())
    torch.testing.assert_close(out.loss, direct)
    params = list(method.backbone.parameters())
    with_grad = torch.autograd.grad(out.loss, params)
    expected = torch.autograd.grad(direct, params)
    for got, want in zip(with_grad, expected, strict=True):
        torch.testing.assert_close(got, want)
    stopped = _method().train()  # the same weights (seed 0), with the stop-gradient
    out_stopped = stopped.training_step([x1, x2], None)
    differs = torch.autograd.grad(out_stopped.loss, list(stopped.backbone.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(differs, with_grad, strict=True))
    assert build_method("simsiam", "convnet-small", 1).settings.stop_gradient is True
