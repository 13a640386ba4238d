r"""Batch normalisation over the global batch of all processes (synchronised BN), on CPU and CUDA.

Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 1, with the mini-batch statistics
taken over the samples of every rank (as ``torch.nn.SyncBatchNorm``, which supports CUDA only):

.. math::

    \mu_c = \frac{1}{M} \sum_{r} \sum_{i \in r} x_{ic}, \qquad
    \sigma^2_c = \frac{1}{M} \sum_{r} \sum_{i \in r} (x_{ic} - \mu_c)^2, \qquad
    y_{ic} = \gamma_c \frac{x_{ic} - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c

where ``i`` runs over a rank's samples and spatial positions and ``M`` is their global count. Each
rank computes its own mean and centred sum of squares (two passes, as one process would), the
pairs are gathered with :func:`contrastlab.distributed.gather_with_grad` (one collective forward,
one backward: its backward sums the gradients of every rank, so the gradients are those of one
process normalising the concatenated batch, with DDP's averaging) and combined exactly. The
running estimates follow ``nn.BatchNorm``: ``r <- (1 - m) r + m s`` with the unbiased variance
``sigma^2 M / (M - 1)``, so they are also those of the one-process run. Every rank must pass the
same shape (the trainer gives every rank the same number of samples). In evaluation mode the
running estimates are used and nothing is communicated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from contrastlab.distributed import gather_with_grad


def global_batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                      ) -> tuple[Tensor, Tensor, Tensor, int]:
    """Normalise ``x`` (N, C, ...) with the mean and biased variance of the global batch.

    Returns ``(y, mean, variance, count)``: the output in ``x``'s dtype, the per-channel
    statistics (float32 at least) and the global number of values per channel.
    """
    dims = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    compute = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    local_count = x.numel() // max(x.shape[1], 1)
    # this rank's mean and sum of squared deviations (two passes), gathered from every rank in
    # one collective and combined exactly (Chan, Golub & LeVeque 1979, pairwise variance):
    # M2 = sum_r M2_r + n sum_r (mean_r - mean)^2 for W ranks of n values each
    local_mean = compute.mean(dim=dims)
    local_m2 = (compute - local_mean.view(shape)).pow(2).sum(dim=dims)
    stats = gather_with_grad(torch.stack([local_mean, local_m2]).unsqueeze(0))  # (W, 2, C)
    means, m2s = stats[:, 0], stats[:, 1]
    mean = means.mean(dim=0)
    count = local_count * stats.shape[0]
    variance = (m2s.sum(dim=0) + local_count * (means - mean).pow(2).sum(dim=0)) / count
    y = (compute - mean.view(shape)) * torch.rsqrt(variance + eps).view(shape)
    if weight is not None:
        y = y * weight.to(y.dtype).view(shape)
    if bias is not None:
        y = y + bias.to(y.dtype).view(shape)
    return y.to(x.dtype), mean, variance, count


class GlobalBatchNorm(_BatchNorm):
    """Drop-in replacement of ``nn.BatchNorm1d/2d/3d`` whose training statistics are those of the
    global batch (see the module docstring); identical to ``nn.BatchNorm`` in one process.

    Honours ``track_running_stats`` being switched off temporarily (multi-crop's local views)
    like ``nn.BatchNorm``: batch statistics, running estimates untouched.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        use_batch_statistics = self.training or (self.running_mean is None
                                                 and self.running_var is None)
        if not use_batch_statistics:
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        y, mean, variance, count = global_batch_norm(input, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = variance * (count / max(count - 1, 1))
                self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype),
                                                          alpha=factor)
                self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype),
                                                         alpha=factor)
        return y


def convert_to_global_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer in ``module`` (in place; returned for chaining) by a
    :class:`GlobalBatchNorm` holding the same parameter and buffer tensors, so the
    ``state_dict`` keys, values, ``requires_grad`` flags and training mode are unchanged."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        return _converted(module)
    for name, child in module.named_children():
        replacement = convert_to_global_batch_norm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _converted(layer: _BatchNorm) -> GlobalBatchNorm:
    new = GlobalBatchNorm(layer.num_features, layer.eps, layer.momentum, layer.affine,
                          layer.track_running_stats)
    if layer.affine:
        new.weight, new.bias = layer.weight, layer.bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(layer, name))
    new.train(layer.training)
    return new


__all__ = ["GlobalBatchNorm", "convert_to_global_batch_norm", "global_batch_norm"]
