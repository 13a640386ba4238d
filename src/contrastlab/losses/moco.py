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
log-sum-exp (:func:`contrastlab.losses.tiled.logsumexp_over_columns`, direct or in tiles) is
max-subtracted, so the losses stay finite at small tau. Under ``torch.distributed`` the in-batch
form gathers the candidates of every process (``gather``, the default); the queue form has no
in-batch negatives and gathers nothing (MoCo v2 enqueues the keys of every process).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns
from contrastlab.losses.checks import check_matrix, check_same_width, check_temperature
from contrastlab.losses.info_nce import info_nce_loss
from contrastlab.losses.tiled import compute_dtype, logsumexp_over_columns


def queue_info_nce(queries: Tensor, keys: Tensor, queue: Tensor, temperature: float = 0.2, *,
                   chunk_size: int | None = None) -> Tensor:
    """The queue form of InfoNCE with gradients into every input that requires them (MoCo
    detaches keys and queue: :func:`moco_info_nce`). Queries, keys and queue are L2-normalised
    here; the queue's log-sum-exp is joined to the positive logit with ``logaddexp``.

    Args:
        queries: (N, D).
        keys: (N, D), row i the positive of query i.
        queue: (K, D) negatives, K >= 0.
        temperature: tau > 0.
        chunk_size: queries and queued keys per tile; None: automatic.

    Returns:
        The mean of l_i over the N queries.
    """
    check_temperature(temperature)
    check_same_width(queries=queries, keys=keys, queue=queue)
    if queries.shape != keys.shape:
        raise ValueError(
            f"queries and keys must have the same shape, got {tuple(queries.shape)} and "
            f"{tuple(keys.shape)}"
        )
    dtype = compute_dtype(queries, keys, queue)
    scaled = F.normalize(queries.to(dtype), dim=1) / temperature
    positive_logit = (scaled * F.normalize(keys.to(dtype), dim=1)).sum(dim=1)
    lse_queue = logsumexp_over_columns(scaled, F.normalize(queue.to(dtype), dim=1),
                                       chunk_size=chunk_size)
    return (torch.logaddexp(positive_logit, lse_queue) - positive_logit).mean()


def moco_info_nce(queries: Tensor, keys: Tensor, queue: Tensor, temperature: float = 0.2, *,
                  chunk_size: int | None = None) -> Tensor:
    """MoCo's InfoNCE of each query against its positive key and the queued negative keys.

    Args:
        queries: (N, D) query embeddings q = f_q(x^q) (normalised here).
        keys: (N, D) positive keys k = f_k(x^k), row i the positive of query i (detached and
            normalised here).
        queue: (K, D) negative keys, K >= 0 (detached and normalised here). Pass the queue as it
            was *before* this batch's keys are enqueued.
        temperature: tau > 0 (0.07 in MoCo v1, 0.2 in MoCo v2).
        chunk_size: queries and queued keys per tile; None: automatic (direct while the N x K
            logits fit in 256 MiB).

    Returns:
        The mean of l_i over the N queries (the reference implementation's cross-entropy with
        the positive as logit 0 of each row).
    """
    check_temperature(temperature)
    for name, x in (("queries", queries), ("keys", keys), ("queue", queue)):
        check_matrix(name, x)
    if queries.shape != keys.shape or queue.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)}, keys {tuple(keys.shape)} and queue "
            f"{tuple(queue.shape)} must share the dimension D, with one key per query"
        )
    return queue_info_nce(queries, keys.detach(), queue.detach(), temperature,
                          chunk_size=chunk_size)


def in_batch_info_nce(
    anchors: Tensor, candidates: Tensor, temperature: float, row_offset: int = 0, *,
    chunk_size: int | None = None, gather: bool = True,
) -> Tensor:
    """InfoNCE of each anchor against all candidates, the positive of anchor i being candidate
    ``row_offset + i`` of this process's candidates. Gradients flow into both arguments (detach
    what must not learn).

    Args:
        anchors: (N, D), normalised here.
        candidates: (M, D) with M >= row_offset + N, normalised here.
        temperature: tau > 0.
        row_offset: position of anchor 0's positive among ``candidates``.
        chunk_size: anchors and candidates per tile; None: automatic.
        gather: under ``torch.distributed`` with several processes, the candidates of every
            process (gathered with gradient) are contrasted; nothing changes in one process.
    """
    check_temperature(temperature)
    check_matrix("anchors", anchors)
    check_matrix("candidates", candidates)
    n, m = anchors.shape[0], candidates.shape[0]
    if anchors.shape[1] != candidates.shape[1] or not 0 <= row_offset <= m - n:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and candidates {tuple(candidates.shape)} must share D "
            f"and row_offset {row_offset} + N must not exceed M"
        )
    columns, column_offset = gather_columns(candidates, gather)
    dtype = compute_dtype(anchors, columns)
    positive_index = torch.arange(n, device=anchors.device) + column_offset + row_offset
    return info_nce_loss(F.normalize(anchors.to(dtype), dim=1),
                         F.normalize(columns.to(dtype), dim=1), positive_index, 1.0 / temperature,
                         chunk_size=chunk_size)


def moco_v3_info_nce(
    queries: Tensor, keys: Tensor, temperature: float = 0.2, row_offset: int = 0, *,
    gather: bool = True,
) -> Tensor:
    """MoCo v3's ``ctr(q, k)``: in-batch InfoNCE of queries against the (detached) keys of the
    global batch, multiplied by 2 tau. The method sums ``ctr(q1, k2) + ctr(q2, k1)``."""
    return 2.0 * temperature * in_batch_info_nce(queries, keys.detach(), temperature, row_offset,
                                                 gather=gather)


class MoCoInfoNCELoss(nn.Module):
    """Module wrapper of :func:`moco_info_nce` with a fixed temperature."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(self, queries: Tensor, keys: Tensor, queue: Tensor) -> Tensor:
        return moco_info_nce(queries, keys, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class MoCoV3Loss(nn.Module):
    """Module wrapper of the symmetrised MoCo v3 loss ``ctr(q1, k2) + ctr(q2, k1)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(
        self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, row_offset: int = 0
    ) -> Tensor:
        return (moco_v3_info_nce(q1, k2, self.temperature, row_offset)
                + moco_v3_info_nce(q2, k1, self.temperature, row_offset))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


__all__ = ["MoCoInfoNCELoss", "MoCoV3Loss", "in_batch_info_nce", "moco_info_nce",
           "moco_v3_info_nce", "queue_info_nce"]
