"""Batched image operations with one set of parameters per sample.

Every operation takes a float32 batch ``x`` of shape (N, C, H, W) with values in [0, 1] and
parameter tensors of shape (N,) (one value per sample) on the same device as ``x``. Nothing here
loops over samples in Python: an operation is a handful of tensor kernels whatever N is.

Parameter *sampling* (``sample_crop_boxes``, ``make_jitter_plan``) runs on the CPU with a
``torch.Generator`` so that a seed gives the same views on any device; ``move_tensors`` then
sends every small parameter tensor of a call to the images' device in one transfer.

Conventions follow torchvision's functional transforms on float images: results of operations
that can leave [0, 1] (brightness, contrast, saturation) are clamped back to [0, 1]; greyscale
uses the ITU-R 601 luma weights 0.299, 0.587, 0.114.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GREY_WEIGHTS",
    "JITTER_OPS",
    "JitterPlan",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_color_jitter",
    "crop_flip_grid",
    "crop_flip_theta",
    "gaussian_blur",
    "gaussian_kernels",
    "grayscale",
    "make_jitter_plan",
    "move_tensors",
    "normalize",
    "resized_crop_flip",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
    "to_float",
]

GREY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B."""

JITTER_OPS: tuple[str, str, str, str] = ("brightness", "contrast", "saturation", "hue")
"""Colour-jitter operations, in the order their indices (0..3) refer to."""


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """View a (N,) parameter tensor as (N, 1, 1, 1) in ``x``'s dtype for broadcasting."""
    return values.to(dtype=x.dtype).view(-1, 1, 1, 1)


def to_float(images: Tensor) -> Tensor:
    """Convert uint8 images (values 0..255) to float32 in [0, 1]: ``x / 255``."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image tensor, got dtype {images.dtype}")
    return images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


# --------------------------------------------------------------------------------------------
# Random resized crop + horizontal flip
# --------------------------------------------------------------------------------------------


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """Sample one random-resized-crop box per sample, on the CPU.

    As in the Inception / SimCLR / torchvision ``RandomResizedCrop`` recipe: the box area is a
    fraction ``U(scale)`` of the image area and its aspect ratio w/h is log-uniform in ``ratio``;
    width and height are rounded to whole pixels and the box must fit inside the image. The
    ``attempts`` candidates of every sample are drawn at once and the first that fits is kept;
    a sample with no fitting candidate gets the centred crop of the whole image with its aspect
    ratio clamped to ``ratio``. The box position is uniform over the integer positions where it
    fits.

    Args:
        n: number of boxes.
        height, width: image size in pixels.
        scale: (min, max) area fraction, 0 < min <= max <= 1.
        ratio: (min, max) aspect ratio w/h, 0 < min <= max.
        generator: CPU random generator (``None``: torch's default CPU generator).
        attempts: candidates drawn per sample.

    Returns:
        float32 tensor (n, 4) of ``(top, left, box_height, box_width)`` in pixels (whole numbers).
    """
    area = float(height * width)
    draws = torch.rand(n, attempts, 2, generator=generator, dtype=torch.float64)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first fitting candidate
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # Fallback: centred crop, aspect ratio clamped to the allowed range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fb_w, fb_h = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fb_w, fb_h = float(round(height * ratio[1])), float(height)
    else:
        fb_w, fb_h = float(width), float(height)
    ok = fits.any(dim=1)
    w = torch.where(ok, w, torch.full_like(w, fb_w))
    h = torch.where(ok, h, torch.full_like(h, fb_h))

    place = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(place[:, 0] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(place[:, 1] * (width - w + 1)).clamp_(max=width - w)
    top = torch.where(ok, top, torch.floor((height - h) / 2))
    left = torch.where(ok, left, torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1).to(torch.float32)


def crop_flip_theta(boxes: Tensor, flip: Tensor, height: int, width: int) -> Tensor:
    """Affine matrices (for ``F.affine_grid`` with ``align_corners=False``) of crop boxes.

    In normalised coordinates (-1 and 1 are the outer pixel edges), the output's x in [-1, 1]
    maps to ``x_in = s_x * x + t_x`` with ``s_x = box_w / W`` and
    ``t_x = (2 left + box_w) / W - 1``, so the output spans exactly the box's pixel edges;
    likewise for y. A flipped sample uses ``-s_x``, which mirrors the box horizontally.

    Args:
        boxes: (N, 4) ``(top, left, box_height, box_width)`` in pixels.
        flip: (N,) bool, True where the view is mirrored left-right.
        height, width: size of the source images.

    Returns:
        (N, 2, 3) float32 tensor ``[[s_x, 0, t_x], [0, s_y, t_y]]``.
    """
    boxes = boxes.to(torch.float32)
    top, left, bh, bw = boxes.unbind(1)
    sx = bw / width
    sy = bh / height
    tx = (2.0 * left + bw) / width - 1.0
    ty = (2.0 * top + bh) / height - 1.0
    sx = torch.where(flip.to(torch.bool), -sx, sx)
    zero = torch.zeros_like(sx)
    return torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(-1, 2, 3)


def rotate_theta(theta: Tensor, angle: Tensor, height: int, width: int) -> Tensor:
    """Compose crop matrices with a rotation of the sampled region about the box centre.

    In source pixels, output point ``p`` (relative to the box centre, in box pixels) samples
    ``centre + R(angle) p``: the view shows the box's content turned by ``-angle``. Pixel and
    normalised coordinates differ by ``diag(W/2, H/2)``, so the linear part becomes
    ``diag(2/W, 2/H) R diag(W/2, H/2) A`` where ``A`` is the crop's (diagonal) part; the
    translation (box centre) is unchanged. ``angle = 0`` returns ``theta`` unchanged.

    Args:
        theta: (N, 2, 3) matrices of :func:`crop_flip_theta`.
        angle: (N,) rotation angles in radians.
        height, width: size of the source images.
    """
    cos, sin = torch.cos(angle).to(theta.dtype), torch.sin(angle).to(theta.dtype)
    aspect = width / height  # (2/W)(H/2) = 1/aspect, (2/H)(W/2) = aspect
    rotation = torch.stack([cos, -sin / aspect, sin * aspect, cos], dim=1).view(-1, 2, 2)
    out = theta.clone()
    out[:, :, :2] = rotation @ theta[:, :, :2]
    return out


def crop_flip_grid(
    boxes: Tensor, flip: Tensor, height: int, width: int, size: tuple[int, int],
    angle: Tensor | None = None,
) -> Tensor:
    """Sampling grid of crop boxes: ``F.affine_grid(crop_flip_theta(...), align_corners=False)``.

    The matrices of ``crop_flip_theta`` are diagonal, so the grid is built directly by
    broadcasting (``x = s_x * u_j + t_x`` and ``y = s_y * v_i + t_y`` with
    ``u_j = (2j + 1) / w - 1`` and ``v_i = (2i + 1) / h - 1``) instead of the batched matrix
    product of ``F.affine_grid``, which is several times slower on the CPU; the values are the
    same up to float rounding.

    With ``angle`` (radians per sample, see :func:`rotate_theta`) the matrices are no longer
    diagonal and ``F.affine_grid`` builds the grid.

    Returns:
        (N, h, w, 2) float32 grid of (x, y) normalised source coordinates.
    """
    h, w = size
    theta = crop_flip_theta(boxes, flip, height, width)
    if angle is not None:
        theta = rotate_theta(theta, angle.to(theta.device), height, width)
        return F.affine_grid(theta, [theta.shape[0], 1, h, w], align_corners=False)
    n = theta.shape[0]
    u = torch.arange(w, dtype=theta.dtype, device=theta.device).mul_(2.0 / w).add_(1.0 / w - 1.0)
    v = torch.arange(h, dtype=theta.dtype, device=theta.device).mul_(2.0 / h).add_(1.0 / h - 1.0)
    gx = torch.addcmul(theta[:, 0, 2:3], theta[:, 0, 0:1], u)  # (N, w)
    gy = torch.addcmul(theta[:, 1, 2:3], theta[:, 1, 1:2], v)  # (N, h)
    grid = torch.empty(n, h, w, 2, dtype=theta.dtype, device=theta.device)
    grid[..., 0] = gx.unsqueeze(1)
    grid[..., 1] = gy.unsqueeze(2)
    return grid


def resized_crop_flip(
    x: Tensor, boxes: Tensor, flip: Tensor, size: tuple[int, int] | int,
    angle: Tensor | None = None,
) -> Tensor:
    """Crop a box out of every image, resize it to ``size`` and optionally mirror it.

    One ``F.grid_sample`` call (bilinear, ``align_corners=False``, border padding) for the whole
    batch, on the grid of ``crop_flip_grid`` (= ``F.affine_grid`` of the per-sample affine
    matrices ``crop_flip_theta``): output pixel (i, j) samples the source at
    ``(top + (i + 0.5) * box_h / h - 0.5, left + (j + 0.5) * box_w / w - 0.5)`` (with
    ``j -> w - 1 - j`` when flipped), the same points as ``F.interpolate(..., mode="bilinear")``
    of the cropped box. There is no antialiasing filter when the box is larger than the output.

    Args:
        x: float (N, C, H, W).
        boxes: (N, 4) ``(top, left, box_height, box_width)`` in pixels, on ``x.device``.
        flip: (N,) bool on ``x.device``.
        size: output (h, w), or one int for a square output.
        angle: optional (N,) rotation of each box about its centre, in radians
            (:func:`rotate_theta`); None or all zeros: no rotation.

    Returns:
        float (N, C, h, w).
    """
    out_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if angle is not None and not bool(angle.any()):
        angle = None
    grid = crop_flip_grid(boxes, flip, x.shape[2], x.shape[3], out_size, angle).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------
# Colour operations
# --------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of RGB images as (N, 1, H, W); 1-channel: ``x``."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    wr, wg, wb = GREY_WEIGHTS
    return (r * wr).add_(g, alpha=wg).add_(b, alpha=wb).unsqueeze(1)


def grayscale(x: Tensor) -> Tensor:
    """Greyscale images with the channel count kept: every channel is set to the luma."""
    if x.shape[1] == 1:
        return x.clone()
    return rgb_to_grayscale(x).expand_as(x).contiguous()


def adjust_brightness(x: Tensor, factor: Tensor, inplace: bool = False) -> Tensor:
    """Brightness: ``clamp(x * factor, 0, 1)`` with one factor per sample."""
    f = _per_sample(factor, x)
    y = x.mul_(f) if inplace else x * f
    return y.clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor, inplace: bool = False) -> Tensor:
    """Contrast: ``clamp(factor * x + (1 - factor) * m, 0, 1)``, m = mean of the image's luma.

    ``m`` is one number per image: the mean over pixels of ``rgb_to_grayscale(x)`` (for 1-channel
    images the mean of the image), as in torchvision's ``adjust_contrast``.
    """
    if x.shape[1] == 3:
        # The mean of the luma is the luma of the channel means.
        r, g, b = x.mean(dim=(2, 3)).unbind(1)
        wr, wg, wb = GREY_WEIGHTS
        mean = (r * wr).add_(g, alpha=wg).add_(b, alpha=wb)
    else:
        mean = x.mean(dim=(1, 2, 3))
    f = _per_sample(factor, x)
    offset = mean.view(-1, 1, 1, 1) * (1.0 - f)
    y = x.mul_(f) if inplace else x * f
    return y.add_(offset).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor, inplace: bool = False) -> Tensor:
    """Saturation: ``clamp(g + factor * (x - g), 0, 1)`` with g the image's luma (per pixel).

    This is ``factor * x + (1 - factor) * g``: 0 gives greyscale, 1 the image, >1 more saturated.
    1-channel images are returned unchanged (a copy unless ``inplace``).
    """
    if x.shape[1] == 1:
        return x if inplace else x.clone()
    g = rgb_to_grayscale(x).expand_as(x)
    f = _per_sample(factor, x)
    if inplace:
        return torch.lerp(g, x, f, out=x).clamp_(0.0, 1.0)
    return torch.lerp(g, x, f).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor, inplace: bool = False) -> Tensor:
    """Hue shift in HSV space by ``shift`` turns (``shift`` in [-0.5, 0.5], one per sample).

    The same result as the HSV round trip ``hsv_to_rgb((h + shift) mod 1, s, v)`` of
    torchvision's ``adjust_hue`` (HSV, not a YIQ rotation), computed without comparisons or
    branches (which are slow on the CPU). Per pixel, with ``M = max(R, G, B)``,
    ``m = min(R, G, B)`` and ``c = M - m``:

    * ``P = (x - m) / c`` is the colour scaled to [0, 1]; ``floor(P_k)`` is 1 exactly where
      channel k is a maximum;
    * the hue in sixths of a turn is ``2k + P_{k+1} - P_{k-1}`` for the first maximal channel k
      (indices mod 3), shifted by ``6 * shift`` and reduced mod 6 to ``h'``;
    * output channel k is ``m + c * clamp(||h' + o_k| - 3| - 1, 0, 1)`` with
      ``o = (0, -2, -4)`` for (R, G, B) -- the HSV-to-RGB trapezoid functions.

    Value (M) and saturation (c / M) are kept, so results stay in [0, 1]; grey pixels (c = 0)
    are unchanged. 1-channel images are returned unchanged.
    """
    if x.shape[1] == 1:
        return x if inplace else x.clone()
    hi = x.amax(dim=1, keepdim=True)
    lo = x.amin(dim=1, keepdim=True)
    chroma = hi - lo
    p = (x - lo).div_(chroma.clamp(min=torch.finfo(x.dtype).tiny))
    pr, pg, pb = p.unbind(1)
    er, eg = torch.floor(pr), torch.floor(pg)  # 1.0 where R (G) is a maximum
    # Hue if B is the max; corrections if R (er = 1) or, R not being a max, G is the max.
    hue = (pr - pg).add_(4.0)
    d_r = (pg - pb).sub_(hue)
    d_g = (pb - pr).add_(2.0).sub_(hue)
    w_g = eg - eg * er
    hue.addcmul_(er, d_r).addcmul_(w_g, d_g)
    hue.add_(_per_sample(shift, x).view(-1, 1, 1), alpha=6.0)
    hue.sub_(torch.floor(hue * (1.0 / 6.0)), alpha=6.0)  # mod 6, into [0, 6)
    offsets = torch.arange(3, dtype=x.dtype, device=x.device).mul_(-2.0).view(1, 3, 1, 1)
    ramp = torch.add(hue.unsqueeze(1), offsets)
    # m + c * clamp(t - 1, 0, 1) == (2m - M) + c * clamp(t, 1, 2), one full-size pass fewer
    ramp.abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
    base = lo.mul_(2.0).sub_(hi)
    if inplace:
        return torch.addcmul(base, chroma, ramp, out=x)
    return torch.addcmul(base, chroma, ramp)


def solarize(x: Tensor, threshold: Tensor | float) -> Tensor:
    """Solarisation: ``1 - x`` where ``x >= threshold``, else ``x`` (threshold per sample)."""
    thr = _per_sample(threshold, x) if isinstance(threshold, Tensor) else threshold
    return torch.where(x >= thr, 1.0 - x, x)


def normalize(
    x: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    inplace: bool = False,
) -> Tensor:
    """Per-channel normalisation ``(x - mean[c]) / std[c]``.

    Computed as ``x * (1 / std[c]) + (-mean[c] / std[c])`` (equal up to float rounding).
    ``mean`` and ``std`` hold one value per channel (Python numbers or tensors).
    """
    out = x if inplace else x.clone()
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return out.sub_(m).div_(s)
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(
            f"normalize: {x.shape[1]} channels but {len(mean)} means and {len(std)} stds"
        )
    for c, (m_c, s_c) in enumerate(zip(mean, std, strict=True)):
        out[:, c].mul_(1.0 / s_c).add_(-m_c / s_c)
    return out


# --------------------------------------------------------------------------------------------
# Gaussian blur
# --------------------------------------------------------------------------------------------


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sigma.

    ``k[i, j] = exp(-t_j^2 / (2 sigma_i^2)) / sum_j(...)`` with ``t_j = j - (kernel_size - 1) / 2``.

    Returns:
        (len(sigma), kernel_size) tensor in sigma's dtype (float32 if sigma is not float).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, dtype=dtype, device=sigma.device)
    s = sigma.to(dtype).view(-1, 1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one sigma per sample and reflect padding.

    Computes ``x`` convolved with the 2-D kernel ``k_i k_i^T``, where
    ``k_i = gaussian_kernels(sigma, kernel_size)[i]``, as a horizontal then a vertical 1-D
    convolution, both one grouped ``conv2d`` over all N*C planes. Borders use reflect padding
    (``dcb|abcd|cba``); the kernel is shortened to fit when an image is smaller than
    ``kernel_size // 2 + 1`` pixels.
    """
    n, c, h, w = x.shape
    kernel_size = min(kernel_size, 2 * (min(h, w) - 1) + 1)
    if kernel_size <= 1 or n == 0:
        return x.clone()
    if n * c == 1:
        # one plane makes conv2d an ungrouped convolution, whose kernel rounds differently: blur
        # it as one of two planes, so a sample's result never depends on the batch around it
        # (distributed ranks augment slices of the global batch and must match it bit for bit)
        return gaussian_blur(x.expand(2, -1, -1, -1), sigma.expand(2), kernel_size)[:1]
    pad = kernel_size // 2
    k = gaussian_kernels(sigma.to(device=x.device), kernel_size).to(x.dtype)
    k = k.repeat_interleave(c, dim=0)  # (N*C, K): plane n*C + c uses sample n's kernel
    planes = x.reshape(1, n * c, h, w)
    out = F.conv2d(
        F.pad(planes, (pad, pad, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c
    )
    out = F.conv2d(
        F.pad(out, (0, 0, pad, pad), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c
    )
    return out.view(n, c, h, w)


# --------------------------------------------------------------------------------------------
# Colour jitter in a random order per sample
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JitterPlan:
    """Which jitter op every selected sample gets at each of the four positions, and with what.

    The batch of N rows is gathered into a work order in which the M selected samples come
    first, arranged so that at position p the samples whose p-th op is ``o`` form one contiguous
    slice (ops in ``JITTER_OPS`` order, slice sizes in ``counts[p]``); unselected samples follow
    and are never touched. Between positions the work batch is re-gathered into the next order,
    and after the last position one more gather restores the batch order. Every op thus runs
    in place on contiguous slices, and the whole jitter costs five row gathers (``index_select``)
    whatever the permutations are.

    Attributes:
        gather: (N,) int64 permutation, the batch rows in position 0's work order.
        regather: (3, N) int64; before position p >= 1 the work batch becomes
            ``work[regather[p - 1]]``.
        restore: (N,) int64; the result is ``work[restore]`` after position 3.
        factors: (4, M) float32, the parameter of the op applied at position p to work row k
            (factor for brightness/contrast/saturation, turns for hue).
        counts: per position, the number of samples getting each op (summing to M).
    """

    gather: Tensor
    regather: Tensor
    restore: Tensor
    factors: Tensor
    counts: tuple[tuple[int, int, int, int], ...]

    @property
    def num_selected(self) -> int:
        """Number of samples the jitter is applied to (M)."""
        return int(self.factors.shape[1])

    def per_sample(self) -> tuple[Tensor, Tensor, Tensor]:
        """The per-sample parameters this plan was made from: ``(factors, order, apply)`` as
        :func:`make_jitter_plan` takes them ((N, 4), (N, 4), (N,)). Unselected samples get the
        identity order and zero factors (they are never used)."""
        n, m = self.gather.numel(), self.num_selected
        device = self.gather.device
        order = torch.arange(4, device=device).repeat(n, 1)
        factors = torch.zeros(n, 4, dtype=self.factors.dtype, device=device)
        rows = self.gather  # the batch row held by each work row at position p
        for p in range(4):
            if p > 0:
                rows = rows[self.regather[p - 1]]
            counts = torch.tensor(self.counts[p], device=device)
            ops = torch.repeat_interleave(torch.arange(4, device=device), counts)
            order[rows[:m], p] = ops
            factors[rows[:m], ops] = self.factors[p]
        apply = torch.zeros(n, dtype=torch.bool, device=device)
        apply[self.gather[:m]] = True
        return factors, order, apply

    def select(self, start: int, stop: int) -> JitterPlan:
        """The plan of batch rows ``start .. stop - 1`` alone (rows re-based to 0): every sample
        keeps its op order and factors, so its jittered pixels are those of the full plan."""
        factors, order, apply = self.per_sample()
        return make_jitter_plan(factors[start:stop], order[start:stop], apply[start:stop])


def make_jitter_plan(factors: Tensor, order: Tensor, apply: Tensor) -> JitterPlan:
    """Build a ``JitterPlan`` (on the CPU) from per-sample jitter parameters.

    Args:
        factors: (N, 4) parameters of (brightness, contrast, saturation, hue) for every sample.
        order: (N, 4) int64, each row a permutation of 0..3: ``order[i, p]`` is the op sample i
            gets at position p.
        apply: (N,) bool, which samples are jittered at all.
    """
    factors, order, apply = factors.cpu(), order.cpu().long(), apply.cpu().bool()
    n = apply.numel()
    selected = apply.nonzero().squeeze(1)
    rest = (~apply).nonzero().squeeze(1)
    order_sel = order[selected]
    factors_sel = factors[selected].to(torch.float32)
    m = selected.numel()
    rows = torch.arange(n)
    tail = torch.arange(m, n)
    regather: list[Tensor] = []
    per_position_factors: list[Tensor] = []
    counts: list[tuple[int, int, int, int]] = []
    gather = rows
    inverse_prev = rows
    perm = rows[:m]
    for p in range(4):
        op = order_sel[:, p]
        perm = torch.argsort(op, stable=True)  # work row k < m holds selected sample perm[k]
        c = torch.bincount(op, minlength=4).tolist()
        counts.append((c[0], c[1], c[2], c[3]))
        per_position_factors.append(factors_sel[perm, op[perm]])
        if p == 0:
            gather = torch.cat([selected[perm], rest])
        else:
            regather.append(torch.cat([inverse_prev[perm], tail]))
        inverse_prev = torch.empty_like(perm)
        inverse_prev[perm] = rows[:m]
    final = torch.cat([selected[perm], rest])  # batch row held by each work row at the end
    restore = torch.empty_like(final)
    restore[final] = rows
    return JitterPlan(
        gather=gather,
        regather=torch.stack(regather),
        restore=restore,
        factors=torch.stack(per_position_factors),
        counts=tuple(counts),
    )


_JITTER_FUNCS: tuple[Callable[[Tensor, Tensor, bool], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


def apply_color_jitter(
    x: Tensor,
    plan: JitterPlan,
    enabled: Sequence[bool] = (True, True, True, True),
    out: Tensor | None = None,
    workspace: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Colour jitter: the four ops of ``JITTER_OPS`` in each sample's own order.

    For every selected sample i, computes ``op_{order[i, 3]}(... op_{order[i, 0]}(x_i))`` with
    the sample's own parameters (see ``make_jitter_plan``); other samples are copied unchanged.
    Ops whose ``enabled`` flag is False are skipped (1-channel images, zero jitter ranges).

    Args:
        x: float (N, C, H, W) in [0, 1], contiguous.
        plan: a ``JitterPlan`` with its tensors on ``x.device`` (see ``move_tensors``).
        enabled: per op in ``JITTER_OPS`` order, whether it is applied.
        out: where to write the result (may be ``x`` itself); a new tensor if None.
        workspace: two contiguous scratch tensors shaped like ``x`` (reusing them across calls
            avoids allocating, and on the CPU page-faulting, two batch-sized buffers per call).

    Returns:
        The (N, C, H, W) result (``out`` when given).
    """
    result = out if out is not None else torch.empty_like(x)
    if plan.num_selected == 0 or not any(enabled):
        return result if result is x else result.copy_(x)
    if workspace is None:
        workspace = (torch.empty_like(x), torch.empty_like(x))
    work, spare = workspace
    if work.shape != x.shape or spare.shape != x.shape:
        raise ValueError(f"workspace tensors must have the shape of x {tuple(x.shape)}")
    torch.index_select(x, 0, plan.gather, out=work)
    for p in range(4):
        if p > 0:
            torch.index_select(work, 0, plan.regather[p - 1], out=spare)
            work, spare = spare, work
        start = 0
        for op, count in enumerate(plan.counts[p]):
            if count and enabled[op]:
                stop = start + count
                _JITTER_FUNCS[op](work[start:stop], plan.factors[p, start:stop], True)
            start += count
    return torch.index_select(work, 0, plan.restore, out=result)


# --------------------------------------------------------------------------------------------
# Moving parameters to the device
# --------------------------------------------------------------------------------------------


def _collect(obj: object, out: list[Tensor]) -> None:
    if isinstance(obj, Tensor):
        out.append(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _collect(getattr(obj, f.name), out)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _collect(item, out)


def _rebuild(obj: object, it: object) -> object:
    if isinstance(obj, Tensor):
        return next(it)  # type: ignore[call-overload]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _rebuild(getattr(obj, f.name), it) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_rebuild(item, it) for item in obj)
    return obj


def _transfer(tensors: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """Send tensors to ``device`` as one byte buffer (one host-to-device copy)."""
    chunks: list[Tensor] = []
    layout: list[tuple[int, int, torch.dtype, torch.Size]] = []
    offset = 0
    for t in tensors:
        flat = t.detach().contiguous().view(-1)
        raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
        nbytes = raw.numel()
        padded = -(-nbytes // 8) * 8  # keep every chunk 8-byte aligned for the dtype views
        chunks.append(raw)
        if padded > nbytes:
            chunks.append(torch.zeros(padded - nbytes, dtype=torch.uint8))
        layout.append((offset, nbytes, t.dtype, t.shape))
        offset += padded
    buffer = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)
    if device.type == "cuda":
        buffer = buffer.pin_memory()
    buffer = buffer.to(device, non_blocking=True)
    out = []
    for start, nbytes, dtype, shape in layout:
        if nbytes == 0:
            out.append(torch.empty(shape, dtype=dtype, device=device))
        else:
            out.append(buffer[start : start + nbytes].view(dtype).view(shape))
    return out


def move_tensors(obj: object, device: torch.device | str) -> object:
    """Return ``obj`` with every tensor in it moved to ``device`` in a single transfer.

    ``obj`` is a tensor, or a (nested) dataclass / tuple / list holding tensors; other values
    are kept. Tensors already on ``device`` are returned as they are when all of them are.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    tensors: list[Tensor] = []
    _collect(obj, tensors)
    if all(t.device == device for t in tensors):
        return obj
    if device.type == "cpu":
        moved = [t.to(device) for t in tensors]
    else:
        moved = _transfer(tensors, device)
    return _rebuild(obj, iter(moved))
