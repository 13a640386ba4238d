"""Optimisers: two parameter groups (weights decayed, biases and norm parameters not).

Default learning rates follow the usual linear scaling with batch size, lr = base * batch / 256:
LARS base 0.3 (SimCLR, Appendix B.1), SGD base 0.06, AdamW base 1e-3.
"""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, AdamW, Optimizer

from contrastlab.optim.lars import LARS

BASE_LR = {"lars": 0.3, "sgd": 0.06, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"lars": 1e-6, "sgd": 5e-4, "adamw": 1e-4}


def default_lr(optimizer: str, batch_size: int) -> float:
    return BASE_LR[optimizer] * batch_size / 256


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float | None = None,
    momentum: float = 0.9,
) -> Optimizer:
    """Two parameter groups: weights (decayed, LARS-adapted) and biases/norm parameters (not)."""
    weight_decay = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "lars":
        groups[1]["lars_adapt"] = False
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'")
