"""SwAV: swapping assignments between multiple views of the same image.

Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, NeurIPS 2020, Algorithm 1::

    C.weight = normalize(C.weight)                        # prototypes on the unit sphere
    z = normalize(g(f(x_1..x_V)))                         # 2 global + V - 2 local crops
    scores = z @ C.T
    with no_grad: q_s = sinkhorn(scores_s) for the global views s   # (queue + batch)
    loss = mean_{s, t != s} CE(q_s, softmax(scores_t / tau))
    (no gradient into C during the first iterations)

Instead of contrasting features directly, each global view's cluster assignment (an equipartition
of the batch over K prototypes, found by Sinkhorn-Knopp) is predicted from every other view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_no_grad, rank, world_size
from contrastlab.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from contrastlab.methods import settings as common
from contrastlab.methods._multi_crop import forward_multi_crop
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.models.prototypes import Prototypes
from contrastlab.models.queue import FeatureQueue
from contrastlab.settings import setting


@dataclass
class SwAVSettings(MethodSettings):
    """SwAV's hyper-parameters."""

    temperature: float = common.temperature(0.1, "the paper")
    projection_dim: int = common.projection_dim(128, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(
        512, "here: SimCLR's width, for the small ConvNets (the paper: 2048)")
    num_prototypes: int = setting(3000, "Number K of prototypes.", source="the paper", ge=1)
    freeze_prototypes_steps: int = setting(
        50, "Steps during which the prototypes get no gradient.",
        source="here: about the first epoch of a small run (the paper: the first epoch)", ge=0)
    sinkhorn_iterations: int = setting(3, "Sinkhorn-Knopp iterations.", source="the paper",
                                       ge=1)
    sinkhorn_epsilon: float = setting(0.05, "Entropy regularisation epsilon of Sinkhorn-Knopp.",
                                      source="the paper", gt=0)
    queue_size: int = common.queue_size(
        0, "Projections of past batches kept per global view for the codes (0: none).",
        "here (the paper: 3840 for batches of 256)")


class SwAV(Method):
    """SwAV with multi-crop, frozen-at-first prototypes and an optional feature queue.

    Settings: :class:`SwAVSettings`. The queue (``queue_size``) is used once full. Under
    multi-process training every rank holds the same queue of the global batch's projections
    (gathered) and scores a 1/W share of its rows; the Sinkhorn sums, all-reduced, then cover
    the queue once, exactly as one process on the whole batch (the reference implementation
    keeps a per-GPU queue instead).
    """

    name = "swav"
    Settings = SwAVSettings
    num_views = 2
    default_local_crops = 6
    supports_multi_crop = True
    unused_parameters = True  # frozen at first: no gradient under DDP either

    def __init__(self, backbone: Backbone, settings: SwAVSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.temperature = s.temperature
        self.freeze_prototypes_steps = s.freeze_prototypes_steps
        self.sinkhorn_iterations = s.sinkhorn_iterations
        self.sinkhorn_epsilon = s.sinkhorn_epsilon
        self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                              s.projection_dim, num_layers=2,
                                              last_batch_norm=False)
        self.prototypes = Prototypes(s.projection_dim, s.num_prototypes)
        self.queues = nn.ModuleList(
            [FeatureQueue(s.queue_size, s.projection_dim) for _ in range(self.num_views)]
            if s.queue_size > 0 else []
        )

    def prototypes_frozen(self) -> bool:
        """True while the prototypes get no gradient (the first ``freeze_prototypes_steps``)."""
        return self.step < self.freeze_prototypes_steps

    def codes(self, scores: Tensor, view: int) -> Tensor:
        """Sinkhorn codes (B, K) of global view ``view`` from its scores, with the queue's
        projections scored by the current prototypes as extra columns once the queue is full."""
        batch = scores.shape[0]
        with torch.no_grad():
            if self.queues and int(self.queues[view].filled) >= self.queues[view].size:
                share = self.queues[view].features.tensor_split(world_size())[rank()]
                queued = self.prototypes(share.to(scores.dtype))
                scores = torch.cat([queued, scores])
            return sinkhorn_knopp(scores, self.sinkhorn_epsilon, self.sinkhorn_iterations)[-batch:]

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) < self.num_views:
            raise ValueError(f"SwAV expects {self.num_views} global views (then local views), "
                             f"got {len(views)}")
        self.prototypes.normalize_()
        batch = views[0].shape[0]
        z = forward_multi_crop(self._embed, views, self.backbone, self.projection_head)
        scores = self.prototypes(z, frozen=self.prototypes_frozen())
        scores = scores.view(len(views), batch, -1)
        codes = torch.stack([self.codes(scores[s].detach(), s) for s in range(self.num_views)])
        loss = swapped_prediction_loss(scores, codes, self.temperature)
        after_step: dict[str, Tensor] = {}
        if self.queues:  # every rank's global-view projections, for the queues
            global_views = z[: self.num_views * batch].detach().view(self.num_views, batch, -1)
            after_step["projections"] = torch.stack([gather_no_grad(v) for v in global_views])
        return StepOutput(loss=loss, metrics={"prototypes_frozen": float(self.prototypes_frozen())},
                          after_step=after_step)

    def on_step_end(self, step: int, progress: float, output: StepOutput) -> None:
        """Enqueue this step's global-view projections (after the codes used the old queue)."""
        for queue, projections in zip(self.queues, output.after_step.get("projections", ()),
                                      strict=True):
            queue.enqueue(projections)

    def _embed(self, images: Tensor) -> Tensor:
        return F.normalize(self.projection_head(self.backbone(images)), dim=1)

    def project(self, images: Tensor) -> Tensor:
        """The L2-normalised projection z the prototypes score."""
        return self._embed(images)
