"""The one abstraction the trainer knows: a :class:`Method`.

A method is an ``nn.Module`` that owns its encoder, heads, loss and any training state (queues, EMA
teachers, centres) as submodules or registered buffers, so checkpoints and DDP see all of it. The
trainer asks it for a loss on a batch of views and tells it when a step has ended; it knows nothing
about SimCLR or any other method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from contrastlab.models import Backbone


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise and detached scalars to log."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of every self-supervised method.

    Subclasses implement :meth:`training_step` and, if they keep state that changes between steps
    (EMA teacher, queue, schedules), :meth:`on_step_end`.
    """

    name: str = "method"

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def training_step(self, views: list[Tensor], labels: Tensor | None) -> StepOutput:
        """Compute the loss on a batch of augmented views (one tensor per view, same images)."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Update non-gradient state after the optimiser step (EMA, queue, schedules)."""

    def encode(self, images: Tensor) -> Tensor:
        """The representation used for evaluation and serving: backbone features."""
        return self.backbone(images)

    @property
    def feature_dim(self) -> int:
        return self.backbone.output_dim
