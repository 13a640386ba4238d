r"""The classical metric-learning baselines: the triplet loss with mining, and the N-pair loss.

**Triplet loss** (Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015, Sec. 3.1): for an anchor
a, a positive p (same identity) and a negative n (another identity), with embeddings on the unit
sphere and squared Euclidean distances :math:`d(x, y) = \lVert f(x) - f(y) \rVert_2^2 =
2 - 2 \cos(x, y)`,

.. math::

    \ell(a, p, n) = \bigl[d(a, p) - d(a, n) + \alpha\bigr]_+ ,

averaged over the mined triplets; :math:`\alpha = 0.2` is FaceNet's margin on L2-normalised
embeddings. Self-supervised use: an *identity* is an image, its positives are its other views,
its negatives the views of every other image in the batch. Every view is an anchor.

Mining (which triplets enter the mean):

* ``none``: every (anchor, positive) pair with one negative drawn uniformly at random from the
  anchor's negatives.
* ``batch-hard`` (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
  Re-Identification", 2017, Sec. 2): one triplet per anchor, its hardest positive (the farthest
  of its positives) and its hardest negative (the closest view of another image).
* ``semi-hard`` (FaceNet Sec. 3.2): every (anchor, positive) pair with a negative farther than
  the positive but within the margin, :math:`d(a, p) < d(a, n) < d(a, p) + \alpha`; of those the
  closest (the hardest semi-hard one). When an anchor has none, its hardest negative is used.

Mining is a selection (no gradient); the loss is differentiated through the selected distances.

**N-pair loss** (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
NeurIPS 2016, Sec. 3): for N pairs :math:`(f_i, f_i^+)` of unnormalised embeddings,

.. math::

    \mathcal{L}_{N\text{-pair}} = \frac{1}{N} \sum_{i=1}^{N}
        \log\Bigl(1 + \sum_{j \ne i} \exp(f_i^\top f_j^+ - f_i^\top f_i^+)\Bigr)
        + \lambda\, \frac{1}{2N} \sum_{i=1}^{N} \bigl(\lVert f_i \rVert_2^2
        + \lVert f_i^+ \rVert_2^2\bigr),

every other pair's positive acting as a negative. The embeddings are not normalised; instead the
paper regularises their L2 norm to be small. The weight used here, :math:`\lambda = 0.002`, is not
from the paper: it is the default of the widely used TensorFlow ``npairs_loss``, applied to the
mean squared norm of the 2N embeddings as written above. The first term is
:func:`contrastlab.losses.info_nce.info_nce_loss` with scale 1 (direct or tiled, ``chunk_size``).

**Distributed** (``gather``, the default of both): each process's embeddings are the anchors and
every process's embeddings (gathered with gradient) the candidates: the triplets are mined among
all ranks' views, the N-pair softmax runs over all ranks' positives. A rank's loss is the mean
over its own triplets (anchors), the same number on every rank, so DDP's gradient averaging
gives the global batch's loss exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns, gather_no_grad
from contrastlab.errors import ConfigError, unknown_name
from contrastlab.losses.checks import check_pair, check_positive
from contrastlab.losses.info_nce import info_nce_loss
from contrastlab.losses.tiled import compute_dtype

MINING = ("none", "batch-hard", "semi-hard")


def _check_triplet(margin: float, mining: str) -> None:
    check_positive(margin, "margin")
    if mining not in MINING:
        raise unknown_name("mining", mining, MINING)


def squared_distances(embeddings: Tensor, columns: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances 2 - 2 cos between the L2-normalised rows of ``embeddings``
    and those of ``columns`` (default: ``embeddings`` itself), (M, K)."""
    z = F.normalize(embeddings, dim=1)
    c = z if columns is None else F.normalize(columns, dim=1)
    return (2 - 2 * (z @ c.t())).clamp_min(0)


@torch.no_grad()
def mine_triplets(
    distances: Tensor,
    ids: Tensor,
    mining: str = "semi-hard",
    margin: float = 0.2,
    generator: torch.Generator | None = None,
    *,
    column_ids: Tensor | None = None,
    row_offset: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Select triplets (anchor, positive, negative indices) from a distance matrix.

    Args:
        distances: (M, K) anchor-to-candidate distances (K = M: the anchors are the candidates).
        ids: (M,) identity of each anchor (the image a view comes from); candidates with the
            same id are its positives, candidates with another id its negatives.
        mining: ``none``, ``batch-hard`` or ``semi-hard`` (see the module docstring).
        margin: alpha, the semi-hard window.
        generator: random source of ``none`` (a CPU generator; the global RNG when None).
        column_ids: (K,) identity of each candidate; default ``ids``.
        row_offset: anchor i is candidate ``row_offset + i`` (never its own positive).

    Returns:
        Three (T,) index tensors, anchors as row indices and positives and negatives as column
        indices: T = M for batch-hard (one triplet per anchor), the number of (anchor,
        positive) pairs otherwise.
    """
    _check_triplet(margin, mining)
    m, k = distances.shape
    column_ids = ids if column_ids is None else column_ids
    same = ids[:, None] == column_ids[None, :]
    own_column = torch.arange(k, device=distances.device)[None, :] == (
        torch.arange(m, device=distances.device)[:, None] + row_offset)
    positive_mask = same & ~own_column
    negative_mask = ~same
    if not bool(positive_mask.any(dim=1).all()):
        raise ValueError("every anchor needs a positive: each id must occur at least twice")
    if not bool(negative_mask.any(dim=1).all()):
        raise ValueError("every anchor needs a negative: the batch must hold at least 2 ids")
    inf = torch.tensor(float("inf"), dtype=distances.dtype, device=distances.device)
    if mining == "batch-hard":
        anchors = torch.arange(m, device=distances.device)
        positives = torch.where(positive_mask, distances, -inf).argmax(dim=1)
        negatives = torch.where(negative_mask, distances, inf).argmin(dim=1)
        return anchors, positives, negatives
    anchors, positives = positive_mask.nonzero(as_tuple=True)
    candidates = negative_mask[anchors]  # (T, K)
    if mining == "none":
        scores = _pair_scores(column_ids, row_offset, anchors.shape[0], generator)
        negatives = torch.where(candidates, scores.to(distances.device), -1.0).argmax(dim=1)
        return anchors, positives, negatives
    anchor_negative = distances[anchors]  # (T, M)
    anchor_positive = distances[anchors, positives][:, None]
    semi_hard = candidates & (anchor_negative > anchor_positive) & (
        anchor_negative < anchor_positive + margin)
    closest_semi_hard = torch.where(semi_hard, anchor_negative, inf).argmin(dim=1)
    hardest = torch.where(candidates, anchor_negative, inf).argmin(dim=1)
    negatives = torch.where(semi_hard.any(dim=1), closest_semi_hard, hardest)
    return anchors, positives, negatives


def _pair_scores(column_ids: Tensor, row_offset: int, pairs: int,
                 generator: torch.Generator | None) -> Tensor:
    """Uniform scores (pairs, K) of random mining for the (anchor, positive) pairs of anchors
    ``row_offset...``: the rows that one draw for the pairs of every column as an anchor gives,
    so that a process's rows get the negatives one process on the whole batch would draw (and
    the random generator advances as much)."""
    _, column_class = torch.unique(column_ids, return_inverse=True)
    positives_per_anchor = torch.bincount(column_class)[column_class] - 1
    start = int(positives_per_anchor[:row_offset].sum())
    shape = (int(positives_per_anchor.sum()), column_ids.shape[0])
    if generator is None:
        scores = torch.rand(shape, device=column_ids.device)
    else:
        scores = torch.rand(shape, generator=generator)
    return scores[start : start + pairs]


def triplet_loss(
    embeddings: Tensor,
    ids: Tensor,
    margin: float = 0.2,
    mining: str = "semi-hard",
    generator: torch.Generator | None = None,
    *,
    gather: bool = True,
) -> Tensor:
    """Triplet loss [d(a,p) - d(a,n) + margin]_+ averaged over the mined triplets.

    Args:
        embeddings: (M, D) embeddings of all views (normalised here).
        ids: (M,) identity of each view (the index of its image, unique over processes, e.g.
            :func:`contrastlab.distributed.global_index`). With ``gather``, laying the rows out
            image by image (all views of image 0, then of image 1...) makes the gathered rows
            the one-process layout, so random mining draws the one-process negatives.
        margin: alpha > 0 (squared distances on the unit sphere lie in [0, 4]).
        mining: ``none``, ``batch-hard`` or ``semi-hard``.
        generator: random source of ``none``.
        gather: under ``torch.distributed`` with several processes, mine positives and
            negatives among every process's views (gathered with gradient, ids without);
            nothing changes in one process.
    """
    _check_triplet(margin, mining)
    if embeddings.ndim != 2 or ids.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings must be (M, D) and ids (M,), got {tuple(embeddings.shape)} and "
            f"{tuple(ids.shape)}"
        )
    embeddings = embeddings.to(compute_dtype(embeddings))
    columns, row_offset = gather_columns(embeddings, gather)
    ids = ids.to(embeddings.device)
    column_ids = gather_no_grad(ids) if gather else ids
    distances = squared_distances(embeddings, None if columns is embeddings else columns)
    anchors, positives, negatives = mine_triplets(distances.detach(), ids, mining, margin,
                                                  generator, column_ids=column_ids,
                                                  row_offset=row_offset)
    violation = distances[anchors, positives] - distances[anchors, negatives] + margin
    return torch.relu(violation).mean()


def _check_l2_weight(l2_weight: float) -> None:
    if l2_weight < 0:
        raise ConfigError(f"l2_weight must be >= 0, got {l2_weight}")


def npair_loss(anchors: Tensor, positives: Tensor, l2_weight: float = 0.002, *,
               chunk_size: int | None = None, gather: bool = True) -> Tensor:
    """Sohn's multi-class N-pair loss with the L2 penalty on the embeddings.

    Args:
        anchors: (N, D) embeddings f_i (unnormalised).
        positives: (N, D) embeddings f_i^+ (row i: the positive of anchor i).
        l2_weight: lambda of the penalty on the mean squared norm.
        chunk_size: anchors and positives per tile of the softmax; None: automatic.
        gather: under ``torch.distributed`` with several processes, every process's positives
            are the negatives; nothing changes in one process.

    Returns:
        mean_i log(1 + sum_{j != i} exp(f_i.f_j+ - f_i.f_i+)) + lambda * mean squared norm.
    """
    _check_l2_weight(l2_weight)
    check_pair(anchors, positives, "anchors and positives")
    dtype = compute_dtype(anchors, positives)
    anchors, positives = anchors.to(dtype), positives.to(dtype)
    all_positives, row_offset = gather_columns(positives, gather)
    if all_positives.shape[0] < 2:
        raise ValueError(f"the N-pair loss needs at least 2 pairs, got N={all_positives.shape[0]}")
    # log(1 + sum_{j != i} exp(l_ij - l_ii)) = logsumexp_j(l_ij) - l_ii: InfoNCE with target i
    positive_index = torch.arange(anchors.shape[0], device=anchors.device) + row_offset
    pair_term = info_nce_loss(anchors, all_positives, positive_index, 1.0, chunk_size=chunk_size)
    squared_norms = torch.cat([anchors, positives]).pow(2).sum(dim=1)
    return pair_term + l2_weight * squared_norms.mean()


class TripletLoss(nn.Module):
    """Module wrapper of :func:`triplet_loss` with a fixed margin and mining."""

    def __init__(self, margin: float = 0.2, mining: str = "semi-hard") -> None:
        super().__init__()
        _check_triplet(margin, mining)
        self.margin = margin
        self.mining = mining

    def forward(self, embeddings: Tensor, ids: Tensor) -> Tensor:
        return triplet_loss(embeddings, ids, self.margin, self.mining)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining}"


class NPairLoss(nn.Module):
    """Module wrapper of :func:`npair_loss` with a fixed L2 weight."""

    def __init__(self, l2_weight: float = 0.002) -> None:
        super().__init__()
        _check_l2_weight(l2_weight)
        self.l2_weight = l2_weight

    def forward(self, anchors: Tensor, positives: Tensor) -> Tensor:
        return npair_loss(anchors, positives, self.l2_weight)

    def extra_repr(self) -> str:
        return f"l2_weight={self.l2_weight}"
