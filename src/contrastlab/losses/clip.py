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

Distributed training: embeddings are gathered from every process with gradients
(:func:`contrastlab.distributed.gather_with_grad`); each process scores its local rows against the
global columns, so the average over processes equals the loss of the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.distributed import gather_with_grad, rank

CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_SCALE = 100.0
SIGLIP_INIT_TEMPERATURE = 10.0  # t = exp(t'), t' = log 10
SIGLIP_INIT_BIAS = -10.0


def _check_pairs(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"paired embeddings must both be (N, D) with the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )


def _normalized(x: Tensor) -> Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # similarities and log-sum-exp in at least float32
    return F.normalize(x, dim=1)


def clip_logit_scale(log_scale: Tensor) -> Tensor:
    """exp(log_scale) clipped at 100 (CLIP, Sec. 2.5); no gradient while clipped."""
    return log_scale.clamp(max=math.log(CLIP_MAX_SCALE)).exp()


def clip_loss(image_embeddings: Tensor, text_embeddings: Tensor, log_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE over the N x N pairs (see the module docstring).

    Args:
        image_embeddings: (N, D) embeddings of the first modality (need not be normalised).
        text_embeddings: (N, D) embeddings of the second; row i is paired with row i.
        log_scale: scalar tensor theta, the logits are exp(theta) (<= 100) times cosines.
    """
    _check_pairs(image_embeddings, text_embeddings)
    x, y = _normalized(image_embeddings), _normalized(text_embeddings)
    x_all, y_all = gather_with_grad(x), gather_with_grad(y)
    scale = clip_logit_scale(log_scale).to(x.dtype)
    n = x.shape[0]
    targets = torch.arange(n, device=x.device) + rank() * n
    image_to_text = F.cross_entropy(scale * x @ y_all.t(), targets)
    text_to_image = F.cross_entropy(scale * y @ x_all.t(), targets)
    return (image_to_text + text_to_image) / 2


def siglip_loss(image_embeddings: Tensor, text_embeddings: Tensor, log_temperature: Tensor,
                bias: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss (see the module docstring), normalised by N.

    Args:
        image_embeddings: (N, D) embeddings of the first modality (need not be normalised).
        text_embeddings: (N, D) embeddings of the second; row i is paired with row i.
        log_temperature: scalar t', the logits are exp(t') times cosines plus ``bias``.
        bias: scalar b.
    """
    _check_pairs(image_embeddings, text_embeddings)
    x, y = _normalized(image_embeddings), _normalized(text_embeddings)
    y_all = gather_with_grad(y)
    n = x.shape[0]
    logits = log_temperature.exp().to(x.dtype) * x @ y_all.t() + bias.to(x.dtype)
    signs = -torch.ones_like(logits)
    local = torch.arange(n, device=x.device)
    signs[local, local + rank() * n] = 1.0
    return -F.logsigmoid(signs * logits).sum() / n


class CLIPLoss(nn.Module):
    """:func:`clip_loss` with its learnable log-scale (initialised to log(1 / temperature))."""

    def __init__(self, temperature: float = CLIP_INIT_TEMPERATURE) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @torch.no_grad()
    def clip_scale(self) -> None:
        """Keep the parameter itself within [0, log 100] (as CLIP's code does after each step)."""
        self.log_scale.clamp_(0.0, math.log(CLIP_MAX_SCALE))

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return clip_loss(image_embeddings, text_embeddings, self.log_scale)


class SigLIPLoss(nn.Module):
    """:func:`siglip_loss` with its learnable log-temperature t' and bias b.

    Args:
        init_scale: the paper's temperature t at initialisation (10; logits are t * cosine + b).
        init_bias: b at initialisation (-10).
    """

    def __init__(self, init_scale: float = SIGLIP_INIT_TEMPERATURE,
                 init_bias: float = SIGLIP_INIT_BIAS) -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        return siglip_loss(image_embeddings, text_embeddings, self.log_temperature, self.bias)


__all__ = ["CLIPLoss", "SigLIPLoss", "clip_logit_scale", "clip_loss", "siglip_loss"]
