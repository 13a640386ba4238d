r"""The cross-view cross-entropy shared by SwAV and DINO: predict one view's target distribution
from every other view's scores.

SwAV (Caron et al., NeurIPS 2020, eq. 3 and Sec. 3.2) predicts the Sinkhorn codes :math:`q_t` of
each global view from the prototype scores of every other view; DINO (Caron et al., ICCV 2021,
Algorithm 1) predicts the teacher's centred, sharpened output :math:`P_t` on each global view
from the student's output on every other view. Both are, for targets :math:`q_t` on the first
T views and logits :math:`p_s` on all V views (view t of both is the same crop),

.. math::

    \mathcal{L} = \frac{1}{|\{(t, s)\}|} \sum_{t < T} \sum_{s \ne t}
        \frac{1}{B} \sum_b -\sum_k q_t^{(k)} \log \operatorname{softmax}(p_s / \tau)^{(k)} .

The targets are constants (no gradient); the log-softmax is computed in at least float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlab.losses.checks import check_temperature
from contrastlab.losses.tiled import compute_dtype


def check_cross_view_shapes(targets: Tensor, logits: Tensor, target_kind: str) -> None:
    """``targets`` (T, B, K) and ``logits`` (V, B, K) with 1 <= T <= V and V >= 2; the error
    names the targets as ``target_kind`` views ("teacher", "coded")."""
    if logits.ndim != 3 or targets.ndim != 3 or targets.shape[1:] != logits.shape[1:]:
        raise ValueError(
            f"the logits must be (V, B, K) and the {target_kind} targets (T, B, K) with the same "
            f"B and K, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    num_targets, num_views = targets.shape[0], logits.shape[0]
    if not 1 <= num_targets <= num_views or num_views < 2:
        raise ValueError(
            f"need at least 2 views and 1 <= {target_kind} views <= views, got {num_targets} "
            f"{target_kind} views of {num_views}"
        )


def cross_view_cross_entropy(targets: Tensor, logits: Tensor, temperature: float, *,
                             target_kind: str = "target") -> Tensor:
    """Mean over pairs (t, s != t) and the batch of ``-sum_k q_t^(k) log softmax(p_s / tau)^(k)``.

    Args:
        targets: (T, B, K) target distributions of views 0..T-1 (detached here).
        logits: (V, B, K) scores of every view, T <= V (the targets' views first).
        temperature: tau > 0 of the softmax over the K outputs.
        target_kind: what the targets are, for error messages ("teacher", "coded").
    """
    check_temperature(temperature)
    check_cross_view_shapes(targets, logits, target_kind)
    log_p = torch.log_softmax(logits.to(compute_dtype(logits)) / temperature, dim=-1)
    q = targets.detach().to(log_p.dtype)
    # cross[t, s] = mean over the batch of -sum_k q_t^(k) log p_s^(k)
    cross = -torch.einsum("tbk,sbk->ts", q, log_p) / logits.shape[1]
    other_view = ~torch.eye(q.shape[0], log_p.shape[0], dtype=torch.bool, device=cross.device)
    return cross[other_view].mean()


__all__ = ["check_cross_view_shapes", "cross_view_cross_entropy"]
