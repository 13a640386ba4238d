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
are the views of the global batch (gathered with gradient) and batch norm is global (the
trainer's GlobalBatchNorm), as with the paper's cross-core batch norm and global negatives.
"""

from __future__ import annotations

from torch import Tensor

from contrastlab.distributed import is_distributed
from contrastlab.losses import nt_xent
from contrastlab.losses.tiled import check_chunk_size, tiled_nt_xent
from contrastlab.methods.base import Method, StepOutput
from contrastlab.models import Backbone, ProjectionHead


class SimCLR(Method):
    """SimCLR with a 2-layer MLP projection head and the NT-Xent loss.

    Args:
        backbone: encoder f.
        temperature: tau of NT-Xent (0.5 in the paper's CIFAR-10 experiments).
        projection_dim: output dimension of g (128 in the paper).
        projection_hidden_dim: hidden width of g.
        loss_chunk_size: rows per tile of the memory-efficient NT-Xent (same loss, memory
            O(N D)); None: tiled only when the 2N x 2N logits would exceed 256 MiB.
    """

    name = "simclr"
    supports_grad_cache = True

    def __init__(
        self,
        backbone: Backbone,
        temperature: float = 0.5,
        projection_dim: int = 128,
        projection_hidden_dim: int = 512,
        loss_chunk_size: int | None = None,
    ) -> None:
        super().__init__(backbone)
        check_chunk_size(loss_chunk_size)
        self.temperature = temperature
        self.loss_chunk_size = loss_chunk_size
        self.projection_head = ProjectionHead(
            backbone.output_dim, projection_hidden_dim, projection_dim, num_layers=2
        )

    def loss_from_embeddings(self, embeddings: Tensor, labels: Tensor | None) -> StepOutput:
        """NT-Xent between the two views' projections (global negatives under DDP)."""
        z1, z2 = embeddings[:, 0], embeddings[:, 1]
        if is_distributed():
            # global negatives: this rank's anchors against every rank's views (gathered with
            # gradient); the mean over ranks is the loss of the whole batch
            loss = tiled_nt_xent(z1, z2, self.temperature,
                                 chunk_size=self.loss_chunk_size, gather=True)
        else:
            loss = nt_xent(z1, z2, self.temperature, chunk_size=self.loss_chunk_size)
        return StepOutput(loss=loss)

    def project(self, images: Tensor) -> Tensor:
        """Projection-head output z = g(f(x)) (the space the loss acts on)."""
        return self.projection_head(self.backbone(images))
