r"""CoSENT: a ranking loss on the cosine similarities of scored sentence pairs.

Su Jianlin, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT" (2022; the
``CoSENTLoss`` of sentence-transformers). For N pairs :math:`(u_i, v_i)` with gold scores
:math:`s_i` and cosines :math:`c_i = \cos(u_i, v_i)`:

.. math::

    L = \log\Big(1 + \sum_{(i, j):\, s_i > s_j} e^{\lambda (c_j - c_i)}\Big)

so every pair of pairs whose cosines are ordered against their scores is penalised; only the
order of the cosines is trained, as Spearman's correlation scores it. :math:`\lambda = 20` is
the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.losses.checks import check_pair


def cosent_loss(first: Tensor, second: Tensor, scores: Tensor, scale: float = 20.0) -> Tensor:
    """CoSENT (see the module docstring) of pairs (``first[i]``, ``second[i]``), each (N, D),
    with gold ``scores`` (N,); 0 (with gradient) when no two scores differ."""
    check_pair(first, second, "first and second")
    if scores.shape != (first.shape[0],):
        raise ValueError(f"scores must be ({first.shape[0]},), got {tuple(scores.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    cosine = F.cosine_similarity(first.float(), second.float(), dim=1) * scale
    differences = cosine[None, :] - cosine[:, None]  # [i, j] = c_j - c_i
    ordered = scores[:, None] > scores[None, :]
    terms = torch.cat([differences.new_zeros(1), differences[ordered]])
    return torch.logsumexp(terms, dim=0)


__all__ = ["cosent_loss"]
