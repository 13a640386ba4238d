"""LARS against its equation, and the optimiser parameter groups."""

import torch
from torch import nn

from contrastlab.optim import build_optimizer, default_lr
from contrastlab.optim.lars import LARS


def test_lars_two_steps_match_the_update_rule() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    lr, momentum, weight_decay, eta = 0.5, 0.9, 1e-2, 1e-3
    optimizer = LARS([{"params": [w]}, {"params": [b], "weight_decay": 0.0, "lars_adapt": False}],
                     lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=eta)
    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    v_w, v_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for step in range(2):
        g_w = torch.randn(5, 4, dtype=torch.float64)
        g_b = torch.randn(4, dtype=torch.float64)
        w.grad, b.grad = g_w.clone(), g_b.clone()
        optimizer.step()
        # d = g + beta w ; lambda = eta ||w|| / ||d|| ; v = mu v + lambda d ; w -= lr v
        d = g_w + weight_decay * w_ref
        trust = eta * w_ref.norm() / d.norm()
        v_w = trust * d if step == 0 else momentum * v_w + trust * d
        w_ref = w_ref - lr * v_w
        v_b = g_b.clone() if step == 0 else momentum * v_b + g_b  # no decay, no adaptation
        b_ref = b_ref - lr * v_b
        torch.testing.assert_close(w.detach(), w_ref)
        torch.testing.assert_close(b.detach(), b_ref)


def test_parameter_groups_exclude_biases_and_norms_from_decay() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    for name in ("lars", "sgd", "adamw"):
        optimizer = build_optimizer(model, name, lr=0.1, weight_decay=0.5)
        decayed, plain = optimizer.param_groups
        assert all(p.ndim > 1 for p in decayed["params"]) and decayed["weight_decay"] == 0.5
        assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    assert default_lr("lars", 512) == 0.3 * 2
