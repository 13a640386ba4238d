r"""Losses for paired data (image-text, or two views through two encoders): CLIP and SigLIP.

Both act on a batch of N pairs (x_i, y_i) whose embeddings are L2-normalised here.

**CLIP** (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021, Figure 3): a symmetric cross-entropy over the N x N logits
:math:`s_{ij} = e^{\theta} \, x_i^\top y_j` with a learnable log-scale :math:`\theta`
(initialised to log(1/0.07), the scale clipped at 100):

.. math::

    \mathcal{L}_{CLIP} = \frac{1}{2N} \sum_{i=1}^{N} \Big[
        -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}} - \log \frac{e^{s_{ii}}}{\sum_j e^{s_{ji}}} \Big]

**SigLIP** (Zhai, Mustafa, Kolesnikov & Beyer, "Sigmoid Loss for Language Image Pre-Training",
ICCV 2023, Algorithm 1): every pair (i, j) is an independent binary problem, positive on the
diagonal, with a learnable temperature :math:`t = e^{t'}` (t' initialised to log 10) and bias b
(initialised to -10):

.. math::

    \mathcal{L}_{SigLIP} = -\frac{1}{N} \sum_{i=1}^{N} \sum_{j=1}^{N}
        \log \sigma\big(z_{ij} (t \, x_i^\top y_j + b)\big), \qquad
        z_{ij} = 1 \text{ if } i = j \text{ else } -1

Distributed training (``gather``, the default): embeddings are gathered from every process with
gradients (:func:`contrastlab.distributed.gather_columns`); each process scores its local rows
against the global columns, so the average over processes equals the loss of the global batch.
CLIP's two cross-entropies are :func:`contrastlab.losses.info_nce.info_nce_loss`, whose
log-sum-exp is direct or tiled (``chunk_size``) as for every InfoNCE form here; SigLIP has no
log-sum-exp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_columns
from contrastlab.losses.checks import (
    check_pair,
    check_positive,
    check_row_offset,
    check_same_width,
    check_temperature,
)
from contrastlab.losses.info_nce import info_nce_loss
from contrastlab.losses.tiled import check_chunk_size, compute_dtype

CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_SCALE = 100.0
SIGLIP_INIT_TEMPERATURE = 10.0  # t = exp(t'), t' = log 10
SIGLIP_INIT_BIAS = -10.0


def _normalized(x: Tensor) -> Tensor:
    return F.normalize(x.to(compute_dtype(x)), dim=1)  # similarities in at least float32


def clip_logit_scale(log_scale: Tensor) -> Tensor:
    """exp(log_scale) clipped at 100 (CLIP, Sec. 2.5); no gradient while clipped."""
    return log_scale.clamp(max=math.log(CLIP_MAX_SCALE)).exp()


def clip_loss_rows(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    all_image_embeddings: Tensor,
    all_text_embeddings: Tensor,
    row_offset: int,
    logit_scale: float | Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""CLIP's symmetric loss of n local pairs against K global pairs (the distributed form).

    Local image ``i`` is contrasted with every text (its own, ``all_text_embeddings[row_offset
    + i]``, is the positive) and local text ``i`` with every image; the loss is the mean of the
    two cross-entropies over the local rows. All embeddings are L2-normalised here.

    Args:
        image_embeddings, text_embeddings: (n, D) local pairs.
        all_image_embeddings, all_text_embeddings: (K, D) all pairs, the local ones at
            ``row_offset : row_offset + n``.
        row_offset: position of the local pairs.
        logit_scale: the multiplier of the cosine similarities (CLIP's ``exp(t)``), a float or
            a scalar tensor that may be learned.
        chunk_size: rows and columns per tile; None: automatic.
    """
    if not isinstance(logit_scale, Tensor):
        check_positive(logit_scale, "logit_scale")
    check_same_width(
        image_embeddings=image_embeddings, text_embeddings=text_embeddings,
        all_image_embeddings=all_image_embeddings, all_text_embeddings=all_text_embeddings,
    )
    n, k = image_embeddings.shape[0], all_image_embeddings.shape[0]
    if text_embeddings.shape[0] != n or all_text_embeddings.shape[0] != k:
        raise ValueError(
            "image and text embeddings must come in pairs: got "
            f"{n} local images and {text_embeddings.shape[0]} texts, {k} global images and "
            f"{all_text_embeddings.shape[0]} texts"
        )
    check_row_offset(row_offset, n, k)
    images, texts = _normalized(image_embeddings), _normalized(text_embeddings)
    all_images = (images if all_image_embeddings is image_embeddings
                  else _normalized(all_image_embeddings))
    all_texts = (texts if all_text_embeddings is text_embeddings
                 else _normalized(all_text_embeddings))
    positive_index = torch.arange(row_offset, row_offset + n, device=images.device)
    image_to_text = info_nce_loss(images, all_texts, positive_index, logit_scale,
                             chunk_size=chunk_size)
    text_to_image = info_nce_loss(texts, all_images, positive_index, logit_scale,
                             chunk_size=chunk_size)
    return (image_to_text + text_to_image) / 2


def clip_loss(image_embeddings: Tensor, text_embeddings: Tensor, log_scale: Tensor, *,
              chunk_size: int | None = None, gather: bool = True) -> Tensor:
    """CLIP's symmetric InfoNCE over the N x N pairs (see the module docstring).

    Args:
        image_embeddings: (N, D) embeddings of the first modality (need not be normalised).
        text_embeddings: (N, D) embeddings of the second; row i is paired with row i.
        log_scale: scalar tensor theta, the logits are exp(theta) (<= 100) times cosines.
        chunk_size: rows and columns per tile; None: automatic.
        gather: under ``torch.distributed`` with several processes, contrast with every
            process's pairs; nothing changes in one process.
    """
    check_pair(image_embeddings, text_embeddings, "paired embeddings")
    all_images, row_offset = gather_columns(image_embeddings, gather)
    all_texts, _ = gather_columns(text_embeddings, gather)
    return clip_loss_rows(image_embeddings, text_embeddings, all_images, all_texts, row_offset,
                          clip_logit_scale(log_scale), chunk_size=chunk_size)


def siglip_loss(image_embeddings: Tensor, text_embeddings: Tensor, log_temperature: Tensor,
                bias: Tensor, *, gather: bool = True) -> Tensor:
    """SigLIP's pairwise sigmoid loss (see the module docstring), normalised by N.

    Args:
        image_embeddings: (N, D) embeddings of the first modality (need not be normalised).
        text_embeddings: (N, D) embeddings of the second; row i is paired with row i.
        log_temperature: scalar t', the logits are exp(t') times cosines plus ``bias``.
        bias: scalar b.
        gather: under ``torch.distributed`` with several processes, the local images against
            every process's texts; nothing changes in one process.
    """
    check_pair(image_embeddings, text_embeddings, "paired embeddings")
    x, y = _normalized(image_embeddings), _normalized(text_embeddings)
    y_all, row_offset = gather_columns(y, gather)
    n = x.shape[0]
    logits = log_temperature.exp().to(x.dtype) * x @ y_all.t() + bias.to(x.dtype)
    signs = -torch.ones_like(logits)
    local = torch.arange(n, device=x.device)
    signs[local, local + row_offset] = 1.0
    return -F.logsigmoid(signs * logits).sum() / n


class CLIPLoss(nn.Module):
    """:func:`clip_loss` with its learnable log-scale (initialised to log(1 / temperature)) and
    an optional tile size."""

    def __init__(self, temperature: float = CLIP_INIT_TEMPERATURE,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        check_temperature(temperature)
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @torch.no_grad()
    def clip_scale(self) -> None:
        """Keep the parameter itself within [0, log 100] (as CLIP's code does after each step)."""
        self.log_scale.clamp_(0.0, math.log(CLIP_MAX_SCALE))

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return clip_loss(image_embeddings, text_embeddings, self.log_scale,
                         chunk_size=self.chunk_size)


class SigLIPLoss(nn.Module):
    """:func:`siglip_loss` with its learnable log-temperature t' and bias b.

    Args:
        init_scale: the paper's temperature t at initialisation (10; logits are t * cosine + b).
        init_bias: b at initialisation (-10).
    """

    def __init__(self, init_scale: float = SIGLIP_INIT_TEMPERATURE,
                 init_bias: float = SIGLIP_INIT_BIAS) -> None:
        super().__init__()
        check_positive(init_scale, "init_scale")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return siglip_loss(image_embeddings, text_embeddings, self.log_temperature, self.bias)


__all__ = ["CLIPLoss", "SigLIPLoss", "clip_logit_scale", "clip_loss", "clip_loss_rows",
           "siglip_loss"]
