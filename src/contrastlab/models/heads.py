"""Heads placed on top of a backbone.

SimCLR's projection head g(.) (Chen et al. 2020, Sec. 2.1 and Appendix B.9): a 2-layer MLP
``Linear -> BN -> ReLU -> Linear -> BN``; the contrastive loss is applied to z = g(h) while the
representation h before the head is what downstream tasks use.
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """MLP projection head with batch normalisation.

    Args:
        input_dim: feature dimension of the backbone.
        hidden_dim: width of the hidden layer(s).
        output_dim: dimension of the projection z.
        num_layers: number of linear layers (>= 1); SimCLR uses 2.
        last_batch_norm: batch-normalise the output (SimCLR v1 code does, without affine).
        hidden_batch_norm: batch-normalise the hidden layers; ``False`` gives the plain
            ``Linear -> ReLU -> Linear`` head of MoCo v2 (Chen et al. 2020, "Improved Baselines").
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        last_batch_norm: bool = True,
        hidden_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = input_dim
        for _ in range(num_layers - 1):
            if hidden_batch_norm:
                layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim)]
            else:
                layers.append(nn.Linear(dim, hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
