"""MAE: masked autoencoders, reconstructing the masked patches of an image from the visible ones.

He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, Sec. 3::

    for minibatch {x_n}:
        patches = patchify(x)                        # L patches per image
        shuffle each image's patches randomly; keep the first 25% (mask ratio 0.75)
        latent = ViT encoder(visible patches + pos. embeddings, CLS)   # masked ones never seen
        tokens = decoder_embed(latent); append a shared learned mask token per masked patch,
                 unshuffle to patch order, add the decoder's position embeddings
        pred = linear(decoder Transformer(tokens))   # pixels of every patch
        L = MSE(pred, per-patch normalised pixels), on masked patches only

Evaluation encodes the whole image (every patch, no mask) and takes the CLS feature.

Defaults: mask ratio 0.75 and norm_pix_loss as in the paper. The decoder is lighter than the
paper's (512 wide, 8 blocks for ViT-L) because the images and encoders here are small: 128 wide
(at most the encoder's width), 2 blocks, 4 heads. The paper's Table 1a: a shallow decoder is as
good for fine-tuning, a deeper one helps linear probing.

Views: the paper trains with random resized crop + flip only. The trainer applies the configured
augmentations; train MAE with ``--jitter-p 0 --grey-p 0 --blur-p 0`` to match the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from contrastlab.distributed import local_slice, world_size
from contrastlab.errors import ConfigError
from contrastlab.losses.mae import mae_loss, random_masking
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models import Backbone
from contrastlab.models.vit import (
    TransformerBlock,
    VisionTransformer,
    init_transformer_weights,
    patchify,
    sincos_position_embedding_2d,
)
from contrastlab.settings import setting

DEFAULT_DECODER_DIM = 128


@dataclass
class MAESettings(MethodSettings):
    """MAE's hyper-parameters."""

    mask_ratio: float = setting(0.75, "Share of the patches hidden from the encoder.",
                                source="the paper", gt=0, lt=1)
    decoder_dim: int | None = setting(
        None, "Width of the light decoder; none: 128, or the encoder's width when smaller.",
        source="here: small images and encoders (the paper: 512)", ge=1)
    decoder_depth: int = setting(2, "Transformer blocks of the decoder.",
                                 source="here (the paper's Table 1a: shallow suffices for "
                                 "fine-tuning)", ge=1)
    decoder_num_heads: int = setting(4, "Attention heads of the decoder's blocks.",
                                     source="here", ge=1)
    norm_pix_loss: bool = setting(True, "Reconstruct per-patch normalised pixels.",
                                  source="the paper")


class MAEDecoder(nn.Module):
    """Light Transformer decoder: encoder latents + mask tokens -> pixels of every patch."""

    def __init__(self, encoder_dim: int, num_patches: int, grid_size: int, patch_dim: int,
                 dim: int = 128, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))  # 1-D: not weight-decayed
        self.register_buffer("pos_embed", sincos_position_embedding_2d(dim, grid_size),
                             persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.predict = nn.Linear(dim, patch_dim)
        init_transformer_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, restore_index: Tensor) -> Tensor:
        """latent (N, 1 + L_keep, D_enc) with CLS first; restore_index (N, L) -> (N, L, P)."""
        x = self.embed(latent)
        n, visible = x.shape[0], x.shape[1] - 1
        masks = self.mask_token.to(x.dtype).expand(n, self.num_patches - visible, -1)
        shuffled = torch.cat([x[:, 1:], masks], dim=1)
        index = restore_index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        patches = shuffled.gather(1, index) + self.pos_embed.to(x.dtype)
        x = torch.cat([x[:, :1], patches], dim=1)  # the CLS position embedding is zero
        for block in self.blocks:
            x = block(x)
        return self.predict(self.norm(x))[:, 1:]


class MAE(Method):
    """Masked autoencoder on a :class:`VisionTransformer` backbone.

    Args:
        backbone: a ViT (``--backbone vit-micro|vit-tiny|vit-small``; ``vit-tiny`` when no
            backbone is given); other backbones are refused, since MAE needs to drop patch
            tokens.
        settings: :class:`MAESettings` (mask ratio, decoder size, pixel normalisation).
    """

    name = "mae"
    Settings = MAESettings
    num_views = 1
    default_backbone = "vit-tiny"  # it drops patch tokens: a ViT (DeiT-Ti's size) when none given

    def __init__(self, backbone: Backbone, settings: MAESettings | None = None,
                 **overrides: Any) -> None:
        s = self.make_settings(settings, overrides)
        mask_ratio, norm_pix_loss = s.mask_ratio, s.norm_pix_loss
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(
                f"method 'mae' needs a Vision Transformer backbone (it drops the masked patch "
                f"tokens), got {type(backbone).__name__}; use --backbone vit-tiny (or vit-micro, "
                "vit-small)"
            )
        masked = round(mask_ratio * backbone.num_patches)
        if masked < 1 or masked >= backbone.num_patches:
            raise ConfigError(
                f"mask_ratio {mask_ratio} masks {masked} of the {backbone.num_patches} patches; "
                "MAE needs at least one masked and one visible patch: use a smaller --patch-size "
                "or another mask_ratio"
            )
        if norm_pix_loss and backbone.patch_dim < 2:
            raise ConfigError("norm_pix_loss needs patches of at least 2 values; use a larger "
                              "--patch-size")
        super().__init__(backbone, s)
        decoder_dim = s.decoder_dim or min(DEFAULT_DECODER_DIM, backbone.dim)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder = MAEDecoder(backbone.dim, backbone.num_patches, backbone.grid_size,
                                  backbone.patch_dim, decoder_dim, s.decoder_depth,
                                  s.decoder_num_heads)

    @property
    def vit(self) -> VisionTransformer:
        return cast(VisionTransformer, self.backbone)

    def forward_encoder(self, images: Tensor, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode a random 1 - mask_ratio of each image's patches.

        Returns the latent (N, 1 + L_keep, D) (CLS first), the mask (N, L) (1 = masked) and the
        index that restores patch order.
        """
        vit = self.vit
        tokens = vit.embed_patches(images)
        n, num_patches, dim = tokens.shape
        # the masks of the whole global batch are drawn (the same generator state on every
        # rank), then this rank's rows taken: the same masks as one process on the whole batch
        rows = local_slice(n * world_size())
        keep_index, mask, restore_index = (
            part[rows] for part in random_masking(n * world_size(), num_patches,
                                                  self.mask_ratio, tokens.device, generator))
        visible = tokens.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, dim))
        return vit.forward_tokens(visible), mask, restore_index

    def reconstruct(self, images: Tensor, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor]:
        """Decoder predictions (N, L, P) for every patch and the mask (N, L)."""
        latent, mask, restore_index = self.forward_encoder(images, generator)
        return self.decoder(latent, restore_index), mask

    def training_step(self, views: list[Tensor], labels: Tensor | None = None) -> StepOutput:
        if len(views) != 1:
            raise ValueError(f"MAE expects exactly 1 view per image, got {len(views)}")
        images = views[0]
        predictions, mask = self.reconstruct(images)
        patches = patchify(images, self.vit.patch_size).float()
        loss = mae_loss(predictions.float(), patches, mask, self.norm_pix_loss)
        return StepOutput(loss=loss)
