r"""InfoNCE in the two forms of Momentum Contrast: against a queue of negative keys (MoCo v1/v2)
and against the other keys of the batch (MoCo v3; also NNCLR's loss).

**Queue form** (He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020, Eq. 1 and Algorithm 1; Chen, Fan, Girshick & He, "Improved
Baselines with Momentum Contrastive Learning", 2020). Query :math:`q_i`, its positive key
:math:`k_i` (the other view through the momentum encoder) and the K queued keys
:math:`\kappa_1..\kappa_K`, all L2-normalised:

.. math::

    \ell_i = -\log \frac{\exp(q_i^\top k_i / \tau)}
             {\exp(q_i^\top k_i / \tau) + \sum_{j=1}^{K} \exp(q_i^\top \kappa_j / \tau)},
    \qquad \mathcal{L} = \frac{1}{N} \sum_i \ell_i .

Keys and queue are constants (the key encoder is updated by momentum, not by gradient), so both
are detached here: no gradient reaches them.

**In-batch form** (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021, Algorithm 1). Each anchor :math:`a_i` is classified among the M
candidates :math:`c_1..c_M` (all keys of the global batch), its positive being
:math:`c_{o + i}` (``o`` = offset of the local rows in the gathered candidates, 0 in one
process):

.. math::

    \ell_i = -\log \frac{\exp(a_i^\top c_{o+i} / \tau)}{\sum_{j=1}^{M} \exp(a_i^\top c_j / \tau)} .

MoCo v3's ``ctr(q, k)`` is this with keys detached, multiplied by :math:`2\tau` ("the loss is
scaled by a constant 2tau", which makes its gradient scale independent of tau); NNCLR
(Dwibedi et al., ICCV 2021, Eq. 2) uses it unscaled with the support-set neighbours as anchors
and the predictions of the other view as candidates.

Logits are computed in at least float32 (bfloat16/float16 inputs are promoted) and the
log-sum-exp is max-subtracted by ``cross_entropy``, so the losses stay finite at small tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def _normalized(x: Tensor) -> Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=1)


def _check_matrix(name: str, x: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (rows, D) matrix, got shape {tuple(x.shape)}")


def moco_info_nce(queries: Tensor, keys: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE of each query against its positive key and the queued negative keys.

    Args:
        queries: (N, D) query embeddings q = f_q(x^q) (normalised here).
        keys: (N, D) positive keys k = f_k(x^k), row i the positive of query i (detached and
            normalised here).
        queue: (K, D) negative keys, K >= 0 (detached and normalised here). Pass the queue as it
            was *before* this batch's keys are enqueued.
        temperature: tau > 0 (0.07 in MoCo v1, 0.2 in MoCo v2).

    Returns:
        The mean of l_i over the N queries; the positive is logit 0 of each row, as in the
        reference implementation's ``labels = zeros(N)``.
    """
    _check_temperature(temperature)
    for name, x in (("queries", queries), ("keys", keys), ("queue", queue)):
        _check_matrix(name, x)
    if queries.shape != keys.shape or queue.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)}, keys {tuple(keys.shape)} and queue "
            f"{tuple(queue.shape)} must share the dimension D, with one key per query"
        )
    q = _normalized(queries)
    k = _normalized(keys.detach()).to(q.dtype)
    negatives = _normalized(queue.detach()).to(q.dtype)
    positive_logits = (q * k).sum(dim=1, keepdim=True)
    negative_logits = q @ negatives.t()
    logits = torch.cat([positive_logits, negative_logits], dim=1) / temperature
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, targets)


def in_batch_info_nce(
    anchors: Tensor, candidates: Tensor, temperature: float, row_offset: int = 0
) -> Tensor:
    """InfoNCE of each anchor against all candidates, the positive of anchor i being candidate
    ``row_offset + i``. Gradients flow into both arguments (detach what must not learn).

    Args:
        anchors: (N, D), normalised here.
        candidates: (M, D) with M >= row_offset + N, normalised here (under DDP: the candidates
            gathered from every rank, ``row_offset`` = rank * N).
        temperature: tau > 0.
    """
    _check_temperature(temperature)
    _check_matrix("anchors", anchors)
    _check_matrix("candidates", candidates)
    n, m = anchors.shape[0], candidates.shape[0]
    if anchors.shape[1] != candidates.shape[1] or not 0 <= row_offset <= m - n:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and candidates {tuple(candidates.shape)} must share D "
            f"and row_offset {row_offset} + N must not exceed M"
        )
    a = _normalized(anchors)
    c = _normalized(candidates).to(a.dtype)
    logits = a @ c.t() / temperature
    targets = torch.arange(row_offset, row_offset + n, device=a.device)
    return F.cross_entropy(logits, targets)


def moco_v3_info_nce(
    queries: Tensor, keys: Tensor, temperature: float = 0.2, row_offset: int = 0
) -> Tensor:
    """MoCo v3's ``ctr(q, k)``: in-batch InfoNCE of queries against the (detached) keys of the
    global batch, multiplied by 2 tau. The method sums ``ctr(q1, k2) + ctr(q2, k1)``."""
    return 2.0 * temperature * in_batch_info_nce(queries, keys.detach(), temperature, row_offset)


class MoCoInfoNCELoss(nn.Module):
    """Module wrapper of :func:`moco_info_nce` with a fixed temperature."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, queries: Tensor, keys: Tensor, queue: Tensor) -> Tensor:
        return moco_info_nce(queries, keys, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class MoCoV3Loss(nn.Module):
    """Module wrapper of the symmetrised MoCo v3 loss ``ctr(q1, k2) + ctr(q2, k1)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(
        self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, row_offset: int = 0
    ) -> Tensor:
        return (moco_v3_info_nce(q1, k2, self.temperature, row_offset)
                + moco_v3_info_nce(q2, k1, self.temperature, row_offset))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
