r"""The masked-autoencoder reconstruction loss: mean squared error on the masked patches only,
against per-patch normalised pixels.

He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, Sec. 3 ("Reconstruction target").

For image n with patches :math:`x_{n,l} \in \mathbb{R}^P` (l = 1..L), the decoder's predictions
:math:`\hat{x}_{n,l}` and the mask :math:`m_{n,l} = 1` where patch l was hidden from the encoder:

.. math::

    \mathcal{L} = \frac{\sum_{n,l} m_{n,l} \, \frac{1}{P} \lVert \hat{x}_{n,l} - t_{n,l} \rVert^2}
                       {\sum_{n,l} m_{n,l}}

With ``norm_pix_loss`` (the paper's better variant) the target is the patch normalised by its own
pixel statistics, :math:`t_{n,l} = (x_{n,l} - \mu_{n,l}) / \sqrt{\sigma^2_{n,l} + 10^{-6}}`, with
:math:`\mu, \sigma^2` the mean and (unbiased, as in the authors' code) variance of the P values
of that patch; otherwise :math:`t = x`.

:func:`random_masking` draws the per-sample random mask the paper uses: argsort of uniform noise,
the first ``L - round(ratio * L)`` patches of that order are kept.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORM_PIX_EPS = 1e-6


def normalized_patch_targets(patches: Tensor, eps: float = NORM_PIX_EPS) -> Tensor:
    """(N, L, P) patches -> each patch minus its mean, over sqrt(its unbiased variance + eps)."""
    if patches.shape[-1] < 2:
        raise ValueError("per-patch normalisation needs at least 2 values per patch")
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_mse(predictions: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked patches of the per-patch mean squared error.

    Args:
        predictions: (N, L, P) decoder outputs.
        targets: (N, L, P) pixel targets (already normalised if wanted); no gradient flows into
            them (they are detached).
        mask: (N, L), 1 (or True) where the patch was masked (hidden from the encoder).
    """
    if predictions.shape != targets.shape or mask.shape != predictions.shape[:2]:
        raise ValueError(
            f"predictions {tuple(predictions.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} must be (N, L, P), (N, L, P) and (N, L)"
        )
    mask = mask.to(predictions.dtype)
    per_patch = (predictions - targets.detach()).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def mae_loss(predictions: Tensor, patches: Tensor, mask: Tensor,
             norm_pix_loss: bool = True) -> Tensor:
    """MAE's loss: :func:`masked_patch_mse` against (normalised, if ``norm_pix_loss``) patches."""
    targets = normalized_patch_targets(patches) if norm_pix_loss else patches
    return masked_patch_mse(predictions, targets, mask)


class MAELoss(nn.Module):
    """Module wrapper of :func:`mae_loss`."""

    def __init__(self, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.norm_pix_loss = norm_pix_loss

    def forward(self, predictions: Tensor, patches: Tensor, mask: Tensor) -> Tensor:
        return mae_loss(predictions, patches, mask, self.norm_pix_loss)


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """round(mask_ratio * L) patches are masked per image."""
    return int(round(mask_ratio * num_patches))


def random_masking(batch: int, num_patches: int, mask_ratio: float, device: torch.device,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by argsort of uniform noise.

    Returns:
        keep_index: (N, L_keep) indices of the visible patches, L_keep = L - round(ratio * L).
        mask: (N, L) float, 1 at masked patches, 0 at visible ones (in the original patch order).
        restore_index: (N, L) the permutation that puts [visible..., masked...] tokens back in
            patch order (``gather(shuffled, 1, restore_index) == original``).

    ``generator`` (on ``device``) makes the draw reproducible; the default is the global RNG of
    ``device``, which the trainer's checkpoints capture.
    """
    keep = num_patches - num_masked(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore_index = shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    return shuffle[:, :keep], mask.gather(1, restore_index), restore_index


__all__ = ["MAELoss", "mae_loss", "masked_patch_mse", "normalized_patch_targets", "num_masked",
           "random_masking"]
