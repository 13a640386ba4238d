r"""Vision Transformer backbones (Dosovitskiy et al., ICLR 2021) sized for small images.

An image of ``image_size`` x ``image_size`` pixels is cut into a ``grid`` x ``grid`` array of
non-overlapping ``patch_size`` x ``patch_size`` patches (L = grid^2 tokens); each flattened patch is
mapped linearly to ``dim`` features, a fixed 2-D sine-cosine position embedding is added, a learned
class token (CLS) is prepended and ``depth`` pre-norm Transformer blocks (multi-head self-attention,
then a GELU MLP of width 4 * dim, each inside a residual branch) are followed by a LayerNorm.
``forward(images)`` returns the CLS feature (``pool="cls"``, as in ViT and MAE's linear probing)
or the mean of the patch features (``pool="mean"``).

The 2-D sine-cosine embedding (as in MAE, He et al. 2022 and MoCo v3, Chen et al. 2021) gives the
first half of the ``dim`` channels to the patch's row and the second half to its column; for a
coordinate :math:`u` and :math:`k = 0 .. dim/4 - 1`,
:math:`\omega_k = 10000^{-k / (dim/4)}`, the channels of that half are
:math:`[\sin(u \omega_0), .., \sin(u \omega_{dim/4-1}),
\cos(u \omega_0), .., \cos(u \omega_{dim/4-1})]`.
The CLS token gets a zero position embedding.

Registered sizes (``GEOMETRY_BACKBONES``: they need the image size, the trainer passes it):

==============  =====  =====  =====  =========================================================
name            dim    depth  heads  use
==============  =====  =====  =====  =========================================================
``vit-micro``   64     2      2      tests and CPU benchmarks (not a standard size)
``vit-tiny``    192    12     3      DeiT-Ti (Touvron et al. 2021)
``vit-small``   384    12     6      DeiT-S
==============  =====  =====  =====  =========================================================

The patch size is ``patch_size`` when given, otherwise :func:`default_patch_size`: 2 for 8x8
digits (a 4x4 grid), 4 for 28x28 MNIST (7x7) and 32x32 CIFAR (8x8), 16 for 224x224 (14x14).

Parameters are initialised as in MAE's implementation: Xavier-uniform linear weights (the patch
embedding included), zero biases, unit LayerNorms, CLS token N(0, 0.02^2). The CLS token is stored
as a 1-D parameter so that the trainer's optimiser does not weight-decay it (as MAE excludes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.models.backbones import GEOMETRY_BACKBONES, Backbone

POOLS = ("cls", "mean")


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(N, C, H, W) images -> (N, L, patch_size^2 * C) patches, row-major over the patch grid.

    Each patch is flattened in (row, column, channel) order within the patch. H and W must be
    multiples of ``patch_size``.
    """
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(n, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # n, grid_h, grid_w, p (row), p (column), c
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int, height: int,
               width: int | None = None) -> Tensor:
    """Inverse of :func:`patchify`: (N, L, patch_size^2 * C) -> (N, C, H, W)."""
    width = height if width is None else width
    n = patches.shape[0]
    p = patch_size
    x = patches.reshape(n, height // p, width // p, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # n, c, grid_h, p (row), grid_w, p (column)
    return x.reshape(n, channels, height, width)


def sincos_position_embedding_2d(dim: int, grid_size: int) -> Tensor:
    """Fixed (grid_size^2, dim) 2-D sine-cosine position embedding (see the module docstring).

    Row-major over the grid, matching :func:`patchify`. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ConfigError(f"a 2-D sine-cosine position embedding needs dim % 4 == 0, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows = coords.repeat_interleave(grid_size)  # patch index l -> row l // grid
    cols = coords.repeat(grid_size)  # patch index l -> column l % grid

    def encode(u: Tensor) -> Tensor:
        angles = u[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def default_patch_size(image_size: int) -> int:
    """Smallest divisor p >= 2 of ``image_size`` giving a grid of at most 8 patches a side (14 for
    images of 64 pixels or more): 8 -> 2, 28 -> 4, 32 -> 4, 64 -> 8, 96 -> 8, 224 -> 16."""
    max_grid = 8 if image_size < 64 else 14
    for p in range(2, image_size + 1):
        if image_size % p == 0 and image_size // p <= max_grid:
            return p
    return image_size


class Attention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017).

    ``mask`` (N, T), True for real tokens, keeps padding out of every query's keys (the text
    encoder's padded sentences); ``dropout`` drops attention weights in training mode (BERT's
    attention dropout, part of SimCSE's augmentation; 0 for the ViT)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"Transformer width {dim} is not divisible by its {num_heads} "
                              "heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (n, heads, t, head_dim)
        keys = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MSA(LN(x)), then x + MLP(LN(x)); the MLP is GELU, mlp_ratio*dim wide.

    ``dropout`` > 0 (the text encoder) drops attention weights and each branch's output before
    its residual sum, as BERT does (Devlin et al. 2019); the ViT uses none."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


def init_transformer_weights(module: nn.Module) -> None:
    """MAE's initialisation: Xavier-uniform linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(Backbone):
    """A ViT encoder; ``forward(images)`` gives (N, dim) features (see the module docstring).

    For masked image modelling the steps are exposed separately:
    :meth:`embed_patches` (patch tokens with position embeddings, no CLS) and
    :meth:`forward_tokens` (prepend CLS, Transformer blocks, final norm) on any subset of tokens.
    """

    def __init__(self, in_channels: int, image_size: int, patch_size: int | None = None,
                 dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 pool: str = "cls") -> None:
        super().__init__()
        patch_size = default_patch_size(image_size) if patch_size is None else patch_size
        if patch_size < 1 or image_size % patch_size:
            raise ConfigError(
                f"patch_size {patch_size} does not divide the image size {image_size}: use a "
                f"divisor of {image_size} (e.g. --patch-size {default_patch_size(image_size)}) or "
                "--image-size with a multiple of the patch size"
            )
        if pool not in POOLS:
            raise ConfigError(f"unknown ViT pooling '{pool}'; choose one of {', '.join(POOLS)}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.patch_dim = patch_size * patch_size * in_channels
        self.dim = dim
        self.pool = pool
        self.output_dim = dim
        self.patch_embed = nn.Linear(self.patch_dim, dim)
        self.cls_token = nn.Parameter(torch.zeros(dim))
        self.register_buffer("pos_embed", sincos_position_embedding_2d(dim, self.grid_size),
                             persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (MAE's scheme)."""
        init_transformer_weights(self)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_patches(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, dim) patch tokens plus their position embeddings."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"this ViT was built for {self.image_size}x{self.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        tokens = self.patch_embed(patchify(images, self.patch_size))
        return tokens + self.pos_embed.to(tokens.dtype)

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """(N, l, dim) embedded patch tokens (any subset) -> (N, 1 + l, dim) normed outputs, the
        CLS token first."""
        cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: Tensor) -> Tensor:
        x = self.forward_tokens(self.embed_patches(images))
        return x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1)


def _register(name: str, dim: int, depth: int, num_heads: int) -> None:
    def build(in_channels: int, image_size: int, patch_size: int | None) -> VisionTransformer:
        return VisionTransformer(in_channels, image_size, patch_size, dim, depth, num_heads)

    GEOMETRY_BACKBONES[name] = build


_register("vit-micro", 64, 2, 2)
_register("vit-tiny", 192, 12, 3)
_register("vit-small", 384, 12, 6)

__all__ = ["Attention", "TransformerBlock", "VisionTransformer", "default_patch_size",
           "init_transformer_weights", "patchify", "sincos_position_embedding_2d", "unpatchify"]
