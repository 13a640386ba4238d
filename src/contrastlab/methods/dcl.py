"""DCL: decoupled contrastive learning (the positive pair removed from the denominator).

Yeh, Hong, Hsu, Liu, Chen & LeCun, ECCV 2022::

    for minibatch {x_k}, k = 1..N:
        two augmentations per image, z = normalise(g(f(views)))     # 2N x D, as SimCLR
        for every anchor i with positive j (the other view of its image):
            l_i = -z_i.z_j / T + log sum_{k != i, k != j} exp(z_i.z_k / T)
        L = mean_i l_i

Identical to SimCLR except for the loss: without the positive in the denominator the gradient
loses NT-Xent's negative-positive coupling factor, which matters most with small batches. T = 0.1
(the paper's). Embeddings are gathered across ranks with gradient, so the negatives are the whole
global batch; every rank computes the loss of the global batch.
"""

from __future__ import annotations

from torch import Tensor

from contrastlab.distributed import gather_with_grad
from contrastlab.losses.dcl import dcl_loss
from contrastlab.methods.base import Method, StepOutput
from contrastlab.models import Backbone, ProjectionHead


class DCL(Method):
    """Decoupled contrastive learning with SimCLR's encoder and projection head.

    Args:
        backbone: encoder f.
        temperature: T (0.1 in the paper).
        projection_dim: output dimension of g (128, as SimCLR).
        projection_hidden_dim: hidden width of g.
    """

    name = "dcl"
    supports_grad_cache = True

    def __init__(
        self,
        backbone: Backbone,
        temperature: float = 0.1,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
    ) -> None:
        super().__init__(backbone)
        self.temperature = temperature
        self.projection_head = ProjectionHead(
            backbone.output_dim, projection_hidden_dim, projection_dim, num_layers=2
        )

    def weight_sigma_or_none(self) -> float | None:
        """sigma of DCLW's weighting function; None: unweighted DCL."""
        return None

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """The decoupled loss over the global batch (embeddings gathered with gradient)."""
        loss = dcl_loss(gather_with_grad(embeddings[:, 0]), gather_with_grad(embeddings[:, 1]),
                        self.temperature, self.weight_sigma_or_none())
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z (the space the loss acts on)."""
        return self.projection_head(self.backbone(images))
