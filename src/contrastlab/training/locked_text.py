"""The features of a locked text tower, computed once before training
(``train-pairs --lock-text``).

A locked tower (:class:`~contrastlab.methods.image_text.TextTower` with ``locked``) is frozen
and in eval mode, so a caption's features never change during the run; as LiT notes of its
locked image tower (Zhai et al., CVPR 2022, Sec. 3), they can be computed once. Here each
*distinct* caption is encoded once before the first step (captions repeat: templated ones, or
several images sharing a caption), and every step looks its batch's rows up. The distinct rows
are found from the tokens (``torch.unique`` over the padded (N, L) ids and mask: sorted, so the same
data give the same order and chunks, hence the same bits, on every start and resume) and encoded
in chunks, each cut to its longest caption.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from contrastlab.data.tokenizer import TokenBatch
from contrastlab.methods.image_text import LockedTextFeatures, TextTower


@dataclass
class LockedCaptions:
    """``features`` (U, dim) of the U distinct captions and ``rows`` (N,): which one each of
    the N pairs' captions is."""

    features: Tensor
    rows: Tensor

    def batch(self, indices: Tensor) -> LockedTextFeatures:
        """The features of pairs ``indices`` (on the features' device)."""
        return LockedTextFeatures(self.features[self.rows[indices].to(self.features.device)])


@torch.no_grad()
def encode_locked_captions(tower: TextTower, tokens: TokenBatch, device: torch.device,
                           chunk: int = 256) -> LockedCaptions:
    """Encode every distinct caption of ``tokens`` (all pairs, padded alike) once with the
    locked ``tower`` on ``device``."""
    if not tower.locked:
        raise ValueError("only a locked text tower's features can be computed before training")
    width = tokens.ids.shape[1]
    # ids and mask together: a tokenizer without a pad token pads with an id it also uses
    unique, rows = torch.unique(torch.cat([tokens.ids, tokens.mask.long()], dim=1), dim=0,
                                return_inverse=True)
    parts = []
    for start in range(0, unique.shape[0], chunk):
        ids, mask = unique[start:start + chunk, :width], unique[start:start + chunk, width:] > 0
        length = max(1, int(mask.sum(dim=1).max()))
        batch = TokenBatch(ids[:, :length], mask[:, :length]).to(device)
        parts.append(tower(batch))
    features = torch.cat(parts) if parts else torch.zeros(0, tower.output_dim, device=device)
    return LockedCaptions(features, rows)


__all__ = ["LockedCaptions", "encode_locked_captions"]
