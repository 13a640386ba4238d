"""SimCLR: contrastive learning of visual representations by maximising agreement between two
augmented views of the same image.

Chen, Kornblith, Norouzi & Hinton, ICML 2020, Algorithm 1::

    for minibatch {x_k}, k = 1..N:
        two augmentations t, t' ~ T per image
        h = f(t(x)), h' = f(t'(x))          # encoder (backbone)
        z = g(h),    z' = g(h')             # projection head
        L = NT-Xent over the 2N projections (each anchor vs its positive and 2N - 2 negatives)
        update f and g to minimise L

Both views pass through the encoder as one batch of 2N images (one forward, batch-norm statistics
over all 2N views, as in the paper's implementation). Under multi-process training the negatives
are the views of the global batch (the loss gathers them with gradient) and batch norm is global
(the trainer's GlobalBatchNorm), as with the paper's cross-core batch norm and global negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from contrastlab.losses import nt_xent
from contrastlab.methods import settings as common
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone, ProjectionHead
from contrastlab.settings import setting


@dataclass
class SimCLRSettings(MethodSettings):
    """SimCLR's hyper-parameters."""

    temperature: float = common.temperature(0.5, "the paper's CIFAR-10 experiments")
    projection_dim: int = common.projection_dim(128, "the paper")
    projection_hidden_dim: int = common.projection_hidden_dim(
        512, "here: the small backbones' features (the paper: the encoder's width, 2048)")
    projection_layers: int = setting(
        2, "Linear layers of the projection head g: 2 the paper's MLP, 1 linear, 0 none (the "
        "loss acts on the backbone features; projection_dim and its hidden width are unused).",
        source="the paper (its Fig. 8 compares none, linear and non-linear)", ge=0)
    loss_chunk_size: int | None = common.loss_chunk_size()


class SimCLR(Method):
    """SimCLR with a 2-layer MLP projection head and the NT-Xent loss (settings:
    :class:`SimCLRSettings`; ``projection_layers`` 1 or 0 gives the paper's linear or no
    projection, Sec. 4.2; ``loss_chunk_size`` tiles the memory-efficient NT-Xent, the same loss
    in O(N D) memory)."""

    name = "simclr"
    Settings = SimCLRSettings
    supports_grad_cache = True

    def __init__(self, backbone: Backbone, settings: SimCLRSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__(backbone, settings, **overrides)
        s = self.settings
        self.temperature = s.temperature
        self.loss_chunk_size = s.loss_chunk_size
        self.projection_head: nn.Module = nn.Identity()  # projection_layers 0: z = h
        if s.projection_layers > 0:
            self.projection_head = ProjectionHead(backbone.output_dim, s.projection_hidden_dim,
                                                  s.projection_dim,
                                                  num_layers=s.projection_layers)

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """NT-Xent between the two views' projections (global negatives under DDP)."""
        loss = nt_xent(embeddings[:, 0], embeddings[:, 1], self.temperature,
                       chunk_size=self.loss_chunk_size)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z = g(f(x)) (the space the loss acts on; the backbone
        features h = f(x) with ``projection_layers`` 0)."""
        return self.projection_head(self.backbone(images))
