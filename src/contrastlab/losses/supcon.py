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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def supcon_loss(z1: Tensor, z2: Tensor, labels: Tensor | None = None,
                temperature: float = 0.1) -> Tensor:
    """SupCon L_out over the 2N views of N images (row i of ``z1`` and ``z2``: image i).

    Args:
        z1: (N, D) embeddings of the first views (need not be normalised).
        z2: (N, D) embeddings of the second views.
        labels: (N,) integer class of each image, or None (each image its own class: NT-Xent).
        temperature: tau > 0.

    Returns:
        The mean over the 2N anchors of -1/|P(i)| sum_p log softmax_i(p). Half-precision inputs
        have their similarities promoted to float32; float64 stays float64.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) with the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    return supcon_loss_views([z1, z2], labels, temperature)


def supcon_loss_views(views: list[Tensor] | tuple[Tensor, ...], labels: Tensor | None = None,
                      temperature: float = 0.1) -> Tensor:
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
    """
    _check_temperature(temperature)
    if len(views) == 0:
        raise ValueError("SupCon needs at least one view of the batch, got none")
    first = views[0]
    if first.ndim != 2 or any(v.shape != first.shape for v in views):
        raise ValueError(
            "every view must be (N, D) with the same shape, got "
            f"{[tuple(v.shape) for v in views]}"
        )
    num_views, n = len(views), first.shape[0]
    if num_views * n < 2:
        raise ValueError(f"SupCon needs at least 2 images (a view to contrast), got N={n}")
    if labels is None:
        if num_views == 1:
            raise ValueError(
                "SupCon with one view per image needs labels: without them no anchor has a "
                "positive (use two views, or --method simclr)"
            )
        labels = torch.arange(n, device=first.device)
    elif labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    z = F.normalize(torch.cat(list(views), dim=0), dim=1)
    similarity = z @ z.t()
    if similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()
    total = num_views * n
    self_mask = torch.eye(total, dtype=torch.bool, device=z.device)
    logits = (similarity / temperature).masked_fill(self_mask, float("-inf"))
    log_probability = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    view_labels = labels.to(z.device).repeat(num_views)
    positive = (view_labels[:, None] == view_labels[None, :]) & ~self_mask
    positive_log_probability = log_probability.masked_fill(~positive, 0.0).sum(dim=1)
    positive_count = positive.sum(dim=1)
    has_positive = positive_count > 0  # all anchors when V >= 2 (the other views of the image)
    per_anchor = positive_log_probability / positive_count.clamp(min=1)
    return -(per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1)


class SupConLoss(nn.Module):
    """Module wrapper of :func:`supcon_loss` with a fixed temperature."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon_loss(z1, z2, labels, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
