r"""Nearest neighbours in a support set by cosine similarity (NNCLR's positive).

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV 2021, Eq. 3:

.. math::  \mathrm{NN}(z, Q) = \arg\min_{q \in Q} \lVert z - q \rVert_2

on L2-normalised vectors, i.e. the support vector of highest cosine similarity with z. Ties go to
the lowest index (``argmax`` semantics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def nearest_neighbours(queries: Tensor, support: Tensor) -> tuple[Tensor, Tensor]:
    """For each row of ``queries`` (N, D), the row of ``support`` (K, D), K >= 1, of highest cosine
    similarity. Returns ``(neighbours, indices)``: the neighbours as stored in ``support`` (no
    gradient) and their row indices."""
    if queries.ndim != 2 or support.ndim != 2 or queries.shape[1] != support.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and support {tuple(support.shape)} must be matrices "
            "with the same number of columns"
        )
    if support.shape[0] == 0:
        raise ValueError("the support set is empty")
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(support.float(), dim=1).t()
    indices = similarity.argmax(dim=1)
    return support[indices], indices


__all__ = ["nearest_neighbours"]
