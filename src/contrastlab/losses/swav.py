r"""SwAV: Sinkhorn-Knopp codes and the swapped prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, Sec. 3.1 and Algorithm 1 (appendix).

**Codes.** For B normalised features z_b and K normalised prototypes c_k, the codes
:math:`Q \in \mathbb{R}^{K \times B}` solve the entropy-regularised transport problem

.. math::  \max_{Q \in \mathcal{Q}} \operatorname{Tr}(Q^\top C^\top Z) + \varepsilon H(Q),\quad
           \mathcal{Q} = \{Q \ge 0: Q 1_B = \tfrac{1}{K} 1_K,\ Q^\top 1_K = \tfrac{1}{B} 1_B\}

(every prototype receives the same share of the batch). The solution is
:math:`Q = \operatorname{diag}(u) \exp(C^\top Z / \varepsilon) \operatorname{diag}(v)`; the
Sinkhorn-Knopp iterations find u, v by normalising rows to 1/K and columns to 1/B in turn, starting
from :math:`\exp(C^\top Z/\varepsilon)` divided by its total. After the last iteration the codes
are multiplied by B, so every sample's code sums to 1 (a distribution over prototypes) and every
prototype receives about B/K in total. The paper uses 3 iterations and eps = 0.05. Sums over
samples are all-reduced so that, in distributed training, the constraint holds over the global
batch (B is the global number of columns). The iterates are kept as logarithms: the same
numbers, without overflow of exp(score / eps) at small eps.

**Swapped prediction.** With :math:`p_t^{(k)} = \operatorname{softmax}_k(z_t^\top c_k / \tau)`
the scores of view t and :math:`q_s` the code of view s,

.. math::  \ell(z_t, q_s) = -\sum_k q_s^{(k)} \log p_t^{(k)}

and the loss averages :math:`\ell` over the batch and over the pairs (s, t != s), where s runs over
the views that have codes (the global views) and t over all views (global and local, multi-crop,
Sec. 3.2), with tau = 0.1: the cross-view cross-entropy that DINO also uses
(:func:`contrastlab.losses.cross_view.cross_view_cross_entropy`).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastlab.distributed import all_reduce_sum, is_distributed, world_size
from contrastlab.errors import ConfigError
from contrastlab.losses.checks import check_temperature
from contrastlab.losses.cross_view import cross_view_cross_entropy


def _all_reduce_max(tensor: Tensor) -> Tensor:
    """Maximum over ranks (the identity in one process)."""
    if is_distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def _count_over_ranks(count: int, device: torch.device) -> int:
    """Sum of ``count`` over ranks (ranks may hold different numbers of queued samples)."""
    if world_size() == 1:
        return count
    return int(all_reduce_sum(torch.tensor(float(count), dtype=torch.float64, device=device)))


def _logsumexp_over_ranks(x: Tensor, dim: int) -> Tensor:
    """``log(all_reduce_sum(sum(exp(x), dim)))`` (keepdim), computed without overflow."""
    local = torch.logsumexp(x, dim=dim, keepdim=True)
    if world_size() == 1:
        return local
    peak = _all_reduce_max(local)
    return peak + torch.log(all_reduce_sum(torch.exp(local - peak)))


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV codes of a batch of prototype scores (Caron et al. 2020, Algorithm 1).

    Args:
        scores: (B, K) scores z_b . c_k of B samples (this process's part of the batch) against K
            prototypes. No gradient flows through the codes.
        epsilon: entropy regularisation eps > 0 (0.05 in the paper).
        iterations: Sinkhorn-Knopp iterations >= 1 (3 in the paper).

    Returns:
        (B, K) codes in at least float32: every row sums to 1; every column sums to about
        B_global / K, exactly in the limit of many iterations.
    """
    check_temperature(epsilon, "sinkhorn_epsilon")
    if iterations < 1:
        raise ConfigError(f"sinkhorn_iterations must be >= 1, got {iterations}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K), got shape {tuple(scores.shape)}")
    scores = scores.detach()
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    # The iterates are kept as logarithms (the same numbers as the paper's exp-domain algorithm,
    # but no exp(score / eps) overflow or whole-row underflow at small eps).
    log_q = scores.t() / epsilon  # K x B
    num_prototypes = log_q.shape[0]
    num_samples = _count_over_ranks(log_q.shape[1], log_q.device)
    log_q = log_q - _logsumexp_over_ranks(log_q.reshape(1, -1), dim=1)  # Q /= sum(Q)
    for _ in range(iterations):
        # each prototype: total 1, then 1/K (sums over the samples of every rank)
        log_q = log_q - _logsumexp_over_ranks(log_q, dim=1) - math.log(num_prototypes)
        # each sample: total 1, then 1/B
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(num_samples)
    return torch.exp(log_q + math.log(num_samples)).t()  # codes of each sample sum to 1


def swapped_prediction_loss(scores: Tensor, codes: Tensor, temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction loss over V views, S of which have codes.

    Args:
        scores: (V, B, K) prototype scores z_t . c_k of every view t (codes' views first).
        codes: (S, B, K) codes q_s of views 0..S-1, S <= V (no gradient is taken through them).
        temperature: tau > 0 of the softmax over prototypes (0.1 in the paper).

    Returns:
        The mean over s < S, t != s and the batch of ``-sum_k q_s^(k) log p_t^(k)``.
    """
    return cross_view_cross_entropy(codes, scores, temperature, target_kind="coded")


class SwappedPredictionLoss(nn.Module):
    """Module wrapper: Sinkhorn codes of the first ``num_coded`` views, then the swapped loss.

    ``forward(scores)`` takes (V, B, K) scores and computes the codes itself (without a queue);
    methods with a feature queue compute the codes with :func:`sinkhorn_knopp` and call
    :func:`swapped_prediction_loss`.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3,
                 num_coded: int = 2) -> None:
        super().__init__()
        check_temperature(temperature)
        check_temperature(epsilon, "sinkhorn_epsilon")
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, iterations
        self.num_coded = num_coded

    def forward(self, scores: Tensor) -> Tensor:
        codes = torch.stack([sinkhorn_knopp(scores[s], self.epsilon, self.iterations)
                             for s in range(self.num_coded)])
        return swapped_prediction_loss(scores, codes, self.temperature)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, epsilon={self.epsilon}, "
                f"iterations={self.iterations}, num_coded={self.num_coded}")


__all__ = ["SwappedPredictionLoss", "sinkhorn_knopp", "swapped_prediction_loss"]
