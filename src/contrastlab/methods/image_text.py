r"""CLIP and SigLIP on image-caption pairs: an image tower and a text tower.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
2021 (CLIP, Figure 3), and Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023
(SigLIP, Algorithm 1). For N pairs (image I_i, caption T_i)::

    I_f = image_encoder(I)            # an image backbone of the registry (convnet, resnet18, ...)
    T_f = text_encoder(T)             # models/text_encoder.py: pooled Transformer tokens, or
                                      # a local Hugging Face model's (hf:PATH), locked or not
    I_e = l2_normalize(I_f @ W_i);  T_e = l2_normalize(T_f @ W_t)   # bias-free projections

and the loss over the N x N similarities :math:`s_{ij} = I_{e,i}^\top T_{e,j}`:

* CLIP: :math:`\frac{1}{2N}\sum_i [-\log \mathrm{softmax}_j(e^{t} s_{ij})_i
  - \log \mathrm{softmax}_j(e^{t} s_{ji})_i]`, t learnable (init log(1/0.07), e^t <= 100);
* SigLIP: :math:`-\frac{1}{N}\sum_{i,j} \log \sigma(z_{ij}(e^{t'} s_{ij} + b))`,
  :math:`z_{ij} = \pm 1`, t' and b learnable (init log 10 and -10).

The methods are :class:`~contrastlab.methods.clip.CLIP` and
:class:`~contrastlab.methods.siglip.SigLIP` themselves (their losses, learnable temperature and
bias, tiled and distributed forms unchanged): :func:`build_image_text_method` gives them the
image backbone as tower A and a :class:`TextTower` as tower B, and a step is
``method.pair_step(images, tokens)``. Two captions of one image in a batch are counted as
negatives of each other's image, as in CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from contrastlab.data.tokenizer import TokenBatch
from contrastlab.errors import unknown_name
from contrastlab.methods.clip import CLIP
from contrastlab.methods.settings import MethodSettings
from contrastlab.methods.siglip import SigLIP
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models import Backbone
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.text_encoder import TextTransformer

#: the two-tower methods that train on image-caption pairs
IMAGE_TEXT_METHODS: dict[str, type[TwoTowerMethod]] = {"clip": CLIP, "siglip": SigLIP}


class TextTower(Backbone):
    """A text encoder (:class:`TextTransformer` or a Hugging Face model,
    :class:`~contrastlab.models.hf_text_encoder.HfTextEncoder`) as a tower: ``forward(tokens)``
    -> (N, dim) pooled features.

    ``locked``: the encoder's parameters are frozen (``requires_grad`` off, so the optimiser
    leaves them out), it stays in eval mode whatever ``train()`` says (no dropout: a locked
    caption always gets the same features) and runs without autograd; only what follows it
    (the text projection) learns on the text side. LiT (Zhai et al., "LiT: Zero-Shot Transfer
    with Locked-image text Tuning", CVPR 2022) locks a pretrained image tower and tunes the
    text tower; this is the mirror image, a locked pretrained text tower.
    """

    def __init__(self, encoder: TextTransformer | HfTextEncoder, locked: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.locked = locked
        self.output_dim = encoder.output_dim
        if locked:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.locked:
            self.encoder.eval()
        return self

    def forward(self, tokens: TokenBatch | LockedTextFeatures  # type: ignore[override]
                ) -> Tensor:
        if isinstance(tokens, LockedTextFeatures):
            if not self.locked:
                raise ValueError("precomputed text features stand for a locked text tower only")
            return tokens.features
        if self.locked:
            with torch.no_grad():
                return self.encoder(tokens.ids, tokens.mask)
        return self.encoder(tokens.ids, tokens.mask)


@dataclass
class LockedTextFeatures:
    """The (N, dim) features a locked :class:`TextTower`'s encoder gave N captions, computed
    before training (:mod:`contrastlab.training.locked_text`): the tower passes them through."""

    features: Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str) -> LockedTextFeatures:
        return LockedTextFeatures(self.features.to(device))


@dataclass
class ImageTextBatch:
    """N pairs: float images (N, C, H, W), already augmented and normalised, and the captions'
    tokens (N rows; a locked text tower's precomputed features instead)."""

    images: Tensor
    tokens: TokenBatch | LockedTextFeatures

    def __post_init__(self) -> None:
        if self.images.shape[0] != len(self.tokens):
            raise ValueError(f"{self.images.shape[0]} images but {len(self.tokens)} captions")

    def to(self, device: torch.device | str) -> ImageTextBatch:
        return ImageTextBatch(self.images.to(device), self.tokens.to(device))


def image_text_settings(name: str, values: dict[str, Any] | None = None,
                        source: str = "configuration") -> MethodSettings:
    """The settings of image-text method ``name`` from ``{field: value}``."""
    if name not in IMAGE_TEXT_METHODS:
        raise unknown_name("image-text method", name, list(IMAGE_TEXT_METHODS))
    return IMAGE_TEXT_METHODS[name].Settings.from_mapping(values or {}, source)


def build_image_text_method(name: str, image_backbone: Backbone,
                            text_encoder: TextTransformer | HfTextEncoder,
                            settings: MethodSettings | None = None,
                            lock_text: bool = False) -> TwoTowerMethod:
    """CLIP or SigLIP with ``image_backbone`` as tower A and ``text_encoder`` as tower B
    (``lock_text``: frozen, see :class:`TextTower`)."""
    if name not in IMAGE_TEXT_METHODS:
        raise unknown_name("image-text method", name, list(IMAGE_TEXT_METHODS))
    return IMAGE_TEXT_METHODS[name](image_backbone, settings,
                                    tower_b=TextTower(text_encoder, lock_text))


def image_text_step(method: TwoTowerMethod, batch: ImageTextBatch) -> Any:
    """The loss (a :class:`~contrastlab.methods.base.StepOutput`) of one batch of pairs."""
    return method.pair_step(batch.images, batch.tokens)


__all__ = ["IMAGE_TEXT_METHODS", "ImageTextBatch", "LockedTextFeatures", "TextTower",
           "build_image_text_method", "image_text_settings", "image_text_step"]
