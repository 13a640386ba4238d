r"""Supervised contrastive loss (SupCon), the :math:`\mathcal{L}^{sup}_{out}` form.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu & Krishnan, "Supervised Contrastive
Learning", NeurIPS 2020, eq. (2).

For a batch of N images with two views each, the 2N embeddings are L2-normalised; for anchor i,
:math:`A(i)` is every other view and :math:`P(i) = \{p \in A(i) : \tilde y_p = \tilde y_i\}` the
views with the same label (always including the other view of the same image):

.. math::

    \mathcal{L}^{sup}_{out} = \frac{1}{2N} \sum_{i=1}^{2N} \frac{-1}{|P(i)|}
        \sum_{p \in P(i)} \log \frac{\exp(z_i \cdot z_p / \tau)}
                                      {\sum_{a \in A(i)} \exp(z_i \cdot z_a / \tau)}

(the 1/|P(i)| outside the log: the paper's preferred form, better than :math:`\mathcal{L}_{in}`).
The paper's default temperature is 0.1.

With ``labels=None`` each image is its own class, so :math:`P(i)` is the other view alone and
the loss is exactly SimCLR's NT-Xent (:func:`contrastlab.losses.nt_xent`).

:func:`supcon_loss_views` is the same equation over V views per image (V = 1 included: the labels
alone then give the positives).

The loss of anchor i is :math:`\mathrm{LSE}_{a \ne i}(z_i \cdot z_a / \tau) - z_i \cdot (\sum_{p
\in P(i)} z_p) / (\tau |P(i)|)`: the log-sum-exp comes from
:func:`contrastlab.losses.tiled.logsumexp_over_columns` (direct or in tiles) and the positive
term from per-class sums, so no N x N mask is built. Under ``torch.distributed`` (``gather``)
each process's views are its anchors and every process's views (and labels) the columns
(:func:`supcon_rows`), normalised so that DDP's gradient averaging gives the global batch's
loss exactly, also when ranks hold different numbers of anchors with a positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns, gather_no_grad
from contrastlab.losses.checks import (
    check_matrix,
    check_pair,
    check_row_offset,
    check_same_width,
    check_temperature,
)
from contrastlab.losses.tiled import compute_dtype, logsumexp_over_columns


def _classes(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Class index of each label (0..C-1) and the number of columns of each class."""
    _, label_class = torch.unique(labels, return_inverse=True)
    return label_class, torch.bincount(label_class)


def supcon_rows(
    embeddings: Tensor,
    columns: Tensor,
    column_labels: Tensor,
    row_offset: int,
    temperature: float = 0.1,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r""":math:`\mathcal{L}^{sup}_{out}` of local anchors against K columns (the distributed form).

    Args:
        embeddings: (M, D) local anchors (every view of every local sample); L2-normalised here.
        columns: (K, D) all contrasted views, ``columns[row_offset : row_offset + M]`` being
            ``embeddings``; L2-normalised here.
        column_labels: (K,) integer class labels of the columns (those of the anchors are
            ``column_labels[row_offset : row_offset + M]``).
        row_offset: position of the local anchors in ``columns``.
        temperature: tau > 0 (no tau / base_tau factor).
        chunk_size: rows and columns per tile; None: automatic.

    Returns:
        ``(K / M) * sum_{local i with a positive} l_i / (number of columns with a positive)``:
        the mean over anchors with a positive in one process, and exactly the global batch's
        mean after averaging over ranks. Raises ``ValueError`` when no column has a positive.
    """
    check_temperature(temperature)
    check_same_width(embeddings=embeddings, columns=columns)
    m, k = embeddings.shape[0], columns.shape[0]
    if column_labels.shape != (k,):
        raise ValueError(f"column_labels must have shape ({k},), got {tuple(column_labels.shape)}")
    check_row_offset(row_offset, m, k)
    column_class, class_count = _classes(column_labels)
    anchors_with_positive = int((class_count[column_class] > 1).sum())
    if anchors_with_positive == 0:
        raise ValueError(
            "SupCon needs at least two views with the same label (no anchor has a positive)"
        )
    dtype = compute_dtype(embeddings, columns)
    anchors = F.normalize(embeddings.to(dtype), dim=1)
    candidates = anchors if columns is embeddings else F.normalize(columns.to(dtype), dim=1)
    scale = 1.0 / temperature
    lse = logsumexp_over_columns(anchors * scale, candidates, self_offset=row_offset,
                                 chunk_size=chunk_size)
    class_sum = candidates.new_zeros(class_count.shape[0], candidates.shape[1]).index_add(
        0, column_class, candidates
    )
    row_class = column_class[row_offset : row_offset + m]
    positive_sum = class_sum[row_class] - candidates[row_offset : row_offset + m]
    num_positives = class_count[row_class] - 1
    mean_positive_logit = scale * (anchors * positive_sum).sum(dim=1) / num_positives.clamp_min(1)
    losses = torch.where(num_positives > 0, lse - mean_positive_logit, torch.zeros_like(lse))
    return losses.sum() * (k / m) / anchors_with_positive


def supcon_loss_views(
    views: list[Tensor] | tuple[Tensor, ...],
    labels: Tensor | None = None,
    temperature: float = 0.1,
    *,
    chunk_size: int | None = None,
    gather: bool = True,
) -> Tensor:
    """SupCon L_out over V >= 1 views of N images: ``views[v]`` is (N, D), row i image i.

    The paper's batch has V = 2; the equation is the same for any V (the multiviewed batch of
    Sec. 3.1). With V = 1 only the labels give positives: P(i) is the other images of the same
    class, and an anchor whose class appears once in the batch has no positive, so its term
    (-1/|P(i)| times an empty sum) is undefined and it is left out of the mean. The mean is
    over the anchors that have a positive; when none has, the loss is 0 (and so is its gradient).

    Args:
        views: V tensors of shape (N, D) (need not be normalised).
        labels: (N,) integer class of each image, or None (each image its own class; needs
            V >= 2).
        temperature: tau > 0.
        chunk_size: rows and columns per tile; None: automatic.
        gather: under ``torch.distributed`` with several processes, every process's views and
            labels are contrasted with the local anchors; nothing changes in one process.

    Returns:
        The loss in float32 (float64 for float64 inputs).
    """
    check_temperature(temperature)
    if len(views) == 0:
        raise ValueError("SupCon needs at least one view of the batch, got none")
    first = views[0]
    check_matrix("views[0]", first)
    if any(v.shape != first.shape for v in views):
        raise ValueError(
            "every view must be (N, D) with the same shape, got "
            f"{[tuple(v.shape) for v in views]}"
        )
    num_views, n = len(views), first.shape[0]
    if num_views * n < 2:
        raise ValueError(f"SupCon needs at least 2 images (a view to contrast), got N={n}")
    if labels is not None and labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels is None and num_views == 1:
        raise ValueError(
            "SupCon with one view per image needs labels: without them no anchor has a "
            "positive (use two views, or --method simclr)"
        )
    embeddings = torch.cat(list(views), dim=0)
    columns, row_offset = gather_columns(embeddings, gather)
    if labels is None:  # each image its own class, distinct over processes
        labels = torch.arange(n, device=first.device) + row_offset // num_views
    view_labels = labels.to(first.device).repeat(num_views)
    column_labels = gather_no_grad(view_labels) if gather else view_labels
    _, class_count = _classes(column_labels)
    if not bool((class_count > 1).any()):  # one view, every class once: nothing to learn
        return embeddings.to(compute_dtype(embeddings)).sum() * 0.0
    return supcon_rows(embeddings, columns, column_labels, row_offset, temperature,
                       chunk_size=chunk_size)


def supcon_loss(z1: Tensor, z2: Tensor, labels: Tensor | None = None,
                temperature: float = 0.1, *, chunk_size: int | None = None,
                gather: bool = True) -> Tensor:
    """SupCon L_out over the 2N views of N images (row i of ``z1`` and ``z2``: image i).

    Args:
        z1: (N, D) embeddings of the first views (need not be normalised).
        z2: (N, D) embeddings of the second views.
        labels: (N,) integer class of each image, or None (each image its own class: NT-Xent).
        temperature: tau > 0.
        chunk_size, gather: as in :func:`supcon_loss_views`.

    Returns:
        The mean over the 2N anchors of -1/|P(i)| sum_p log softmax_i(p).
    """
    check_pair(z1, z2)
    return supcon_loss_views([z1, z2], labels, temperature, chunk_size=chunk_size,
                             gather=gather)


class SupConLoss(nn.Module):
    """Module wrapper of :func:`supcon_loss` with a fixed temperature."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon_loss(z1, z2, labels, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


__all__ = ["SupConLoss", "supcon_loss", "supcon_loss_views", "supcon_rows"]
