"""NNCLR's NN(z, Q) against a brute-force cosine search (Dwibedi et al. 2021, Eq. 3)."""

import math

import pytest
import torch

from contrastlab.models.nearest_neighbour import nearest_neighbours


def brute_force(queries: torch.Tensor, support: torch.Tensor) -> list[int]:
    """argmin_q ||z/|z| - q/|q| ||, scanning the support set in order (first minimum kept)."""
    found = []
    for z in queries.tolist():
        best, best_distance = -1, math.inf
        z_norm = math.sqrt(sum(v * v for v in z))
        for index, q in enumerate(support.tolist()):
            q_norm = math.sqrt(sum(v * v for v in q))
            distance = sum((a / z_norm - b / q_norm) ** 2 for a, b in zip(z, q, strict=True))
            if distance < best_distance - 1e-12:
                best, best_distance = index, distance
        found.append(best)
    return found


@pytest.mark.parametrize("n,k,d", [(1, 1, 3), (5, 17, 4), (16, 64, 8)])
def test_exact_nearest_neighbour(n: int, k: int, d: int) -> None:
    generator = torch.Generator().manual_seed(n + k + d)
    queries = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    support = torch.randn(k, d, dtype=torch.float64, generator=generator)
    neighbours, indices = nearest_neighbours(queries, support)
    assert indices.tolist() == brute_force(queries.detach(), support)
    assert torch.equal(neighbours, support[indices])
    assert not neighbours.requires_grad


def test_scale_invariance_ties_and_errors() -> None:
    support = torch.tensor([[1.0, 0.0], [10.0, 0.0], [0.0, 1.0]])
    # rows 0 and 1 have the same direction: the first one wins
    assert nearest_neighbours(torch.tensor([[3.0, 0.1]]), support)[1].tolist() == [0]
    assert nearest_neighbours(torch.tensor([[0.1, 5.0]]), support)[1].tolist() == [2]
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbours(torch.randn(2, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="columns"):
        nearest_neighbours(torch.randn(2, 2), torch.randn(4, 3))
