"""DINO's projection head.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Sec. 3.1
and Appendix: a 3-layer MLP (hidden width 2048, GELU) to a bottleneck of 256, L2 normalisation,
then a weight-normalised linear layer without bias to K outputs (65,536 in the paper). The weight
norm's magnitude g is fixed to 1, so each output k is the cosine-like score ``u . v_k / ||v_k||``
of the normalised bottleneck u with the direction v_k; here the layer stores the directions
``last_layer_direction`` (V in ``W = g V / ||V||``) and has no g at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DINOHead(nn.Module):
    """MLP -> L2 normalisation -> weight-normalised linear layer (g = 1).

    Args:
        input_dim: backbone feature dimension.
        hidden_dim: width of the MLP's hidden layers (2048 in the paper).
        bottleneck_dim: output of the MLP (256 in the paper).
        num_prototypes: outputs K of the last layer (65,536 in the paper).
        num_layers: linear layers of the MLP (3 in the paper).
        batch_norm: batch-normalise the hidden layers (the paper's ViT default: no).
    """

    def __init__(self, input_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_prototypes: int = 65536, num_layers: int = 3,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        direction = torch.empty(num_prototypes, bottleneck_dim)
        nn.init.kaiming_uniform_(direction, a=5**0.5)  # nn.Linear's default initialisation
        self.last_layer_direction = nn.Parameter(direction)
        self.output_dim = num_prototypes

    def last_layer_weight(self) -> Tensor:
        """The weight-normalised last layer, ``V / ||V||`` row-wise (g = 1)."""
        return F.normalize(self.last_layer_direction, dim=1)

    def bottleneck(self, x: Tensor) -> Tensor:
        """The L2-normalised MLP output u (N, bottleneck_dim)."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> Tensor:
        """Outputs (N, K); ``freeze_last_layer`` stops the gradient into the last layer."""
        weight = self.last_layer_weight()
        if freeze_last_layer:
            weight = weight.detach()
        u = self.bottleneck(x)
        return u @ weight.to(u.dtype).t()


__all__ = ["DINOHead"]
