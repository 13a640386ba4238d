"""SwAV's prototypes: K trainable vectors c_k, kept on the unit sphere.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
NeurIPS 2020, Sec. 3.1: the prototype matrix C = [c_1, ..., c_K] is a linear layer without bias
applied to the L2-normalised projection z; the scores are z . c_k. The reference implementation
re-normalises every prototype to unit length before each training iteration
(:meth:`Prototypes.normalize_`), so the scores are cosine similarities in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Prototypes(nn.Module):
    """``num_prototypes`` x ``dim`` prototype vectors; ``forward(z)`` returns the scores z C^T.

    Args:
        dim: dimension of the projections z.
        num_prototypes: K (3000 in the paper).
    """

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(f"dim and num_prototypes must be >= 1, got {dim}, {num_prototypes}")
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's default initialisation
        self.normalize_()

    @property
    def num_prototypes(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype onto the unit sphere, in place (no gradient)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: Tensor, frozen: bool = False) -> Tensor:
        """Scores (N, K) of projections z (N, dim); ``frozen`` stops the gradient into C."""
        weight = self.weight.detach() if frozen else self.weight
        return z @ weight.to(z.dtype).t()


__all__ = ["Prototypes"]
