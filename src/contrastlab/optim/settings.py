"""The optimiser's settings (the ``optimizer:`` section of a configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastlab.settings import Settings, setting

OPTIMIZERS = ("lars", "sgd", "adamw")


@dataclass
class OptimizerSettings(Settings):
    """Which optimiser, its learning rate and the schedule's warm-up."""

    section: ClassVar[str] = "optimizer"

    name: str = setting("adamw", "Optimiser: lars, sgd or adamw.", key="optimizer",
                        source="here: AdamW learns fastest on the small CPU budgets",
                        choices=OPTIMIZERS)
    lr: float | None = setting(
        None, "Peak learning rate; none: base x batch / 256 (LARS 0.3, SGD 0.06, AdamW 1e-3).",
        source="SimCLR's linear scaling rule", gt=0)
    weight_decay: float | None = setting(
        None, "Weight decay of weights (not biases or norm parameters); none: LARS 1e-6, "
        "SGD 5e-4, AdamW 1e-4.", source="SimCLR (LARS) and common practice", ge=0)
    momentum: float = setting(0.9, "Momentum of SGD and LARS.", source="SimCLR", ge=0, lt=1)
    warmup_fraction: float = setting(0.1, "Share of the schedule spent warming up linearly.",
                                     source="SimCLR: 10 of 100 epochs", ge=0, lt=1)
    clip_grad_norm: float | None = setting(None, "Clip the gradients' total L2 norm to this.",
                                           source="here: off", gt=0)
