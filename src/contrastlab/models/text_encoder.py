r"""A small Transformer sentence encoder (BERT-like, Devlin et al. 2019), built from the ViT's
blocks (:mod:`contrastlab.models.vit`).

Token ids (N, L) with their padding mask go through a token embedding plus a learned position
embedding (L <= ``max_length``), dropout, ``depth`` pre-norm Transformer blocks (self-attention
that ignores padding, a GELU MLP; dropout on the attention weights and on each residual branch)
and a final LayerNorm (``final_norm``; without it the pooled vectors are sums of residual streams
whose norms differ from token to token, so training can weight rare words up as IDF does).
The sentence embedding is (``pool``)

* ``mean``: the mean of the outputs over the real tokens,
  :math:`h = \frac{1}{|M|} \sum_{t \in M} x_t` (sentence-transformers' default,
  Reimers & Gurevych 2019);
* ``cls``: the output at the first position (the ``[CLS]`` token of the tokenizer).

Dropout is SimCSE's only augmentation (Gao et al. 2021): in training mode two passes of the same
sentence differ by their dropout masks. :meth:`TextTransformer.forward` of an encoder in eval
mode is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from contrastlab.models.backbones import Backbone
from contrastlab.models.vit import TransformerBlock, init_transformer_weights
from contrastlab.settings import Settings, setting

TEXT_POOLS = ("mean", "cls")


@dataclass
class TextEncoderSettings(Settings):
    """The text encoder's shape (the ``encoder:`` section of a text run)."""

    section: ClassVar[str] = "encoder"

    dim: int = setting(256, "Width of the token features (and of the sentence embedding).",
                       source="here: small for CPU budgets", ge=8)
    depth: int = setting(2, "Transformer blocks.", source="here: small for CPU budgets", ge=0)
    heads: int = setting(4, "Attention heads (must divide dim).", source="here", ge=1)
    mlp_ratio: float = setting(2.0, "Width of each block's MLP as a multiple of dim.",
                               source="here (BERT: 4)", gt=0)
    max_length: int = setting(48, "Tokens kept per sentence ([CLS] and [SEP] included).",
                              source="here: > 99% of STS-B sentences fit", ge=2)
    positions: bool = setting(
        True, "Add learned position embeddings; off: the blocks see a bag of tokens (with depth "
        "0 the positions would only tell the sentence's length).", source="BERT (on)")
    pool: str = setting("mean", "Sentence embedding: mean of the token outputs, or the [CLS] "
                        "output.", source="sentence-transformers (mean); SimCSE (cls)",
                        choices=TEXT_POOLS)
    final_norm: bool = setting(
        True, "LayerNorm the token outputs before pooling (BERT, the ViT); off: pool the raw "
        "residual stream, whose token norms can then weight the words (an IDF-like weighting "
        "an encoder trained from scratch can learn).", source="BERT (on)")
    dropout: float = setting(0.1, "Dropout on embeddings, attention weights and residual "
                             "branches: SimCSE's augmentation.",
                             source="SimCSE (BERT's 0.1, its best in Table 2)", ge=0, lt=1)

    def check_together(self) -> None:
        if self.dim % self.heads:
            from contrastlab.errors import ConfigError

            raise ConfigError(f"heads {self.heads} must divide dim {self.dim}")


class TextTransformer(Backbone):
    """Sentence encoder: ``forward(ids, mask)`` -> (N, dim) (see the module docstring)."""

    def __init__(self, vocab_size: int, settings: TextEncoderSettings | None = None,
                 pad_id: int = 0) -> None:
        super().__init__()
        s = settings or TextEncoderSettings()
        self.settings = s
        self.vocab_size = vocab_size
        self.output_dim = s.dim
        self.max_length = s.max_length
        self.pool = s.pool
        self.token_embed = nn.Embedding(vocab_size, s.dim, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(s.max_length, s.dim))
        self.embed_drop = nn.Dropout(s.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(s.dim, s.heads, s.mlp_ratio, s.dropout)
                                    for _ in range(s.depth))
        self.norm = nn.LayerNorm(s.dim, eps=1e-6) if s.final_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linear weights, zero biases (as the ViT); embeddings N(0, 0.02^2)
        (BERT's initialiser range), the padding row zero."""
        init_transformer_weights(self)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        with torch.no_grad():
            self.token_embed.weight[self.token_embed.padding_idx].zero_()

    def token_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """(N, L) ids and mask -> (N, L, dim) token outputs (normed with ``final_norm``)."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"{ids.shape[1]} tokens, but this encoder takes at most "
                             f"{self.max_length}")
        x = self.token_embed(ids)
        if self.settings.positions:
            x = x + self.pos_embed[:ids.shape[1]]
        x = self.embed_drop(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return pool_tokens(self.token_features(ids, mask), mask, self.pool)


def pool_tokens(x: Tensor, mask: Tensor, pool: str) -> Tensor:
    """(N, L, D) token outputs -> (N, D) sentence embeddings: the mean over the real tokens
    (``mask``) or the first position's output (``cls``); see the module docstring."""
    if pool == "cls":
        return x[:, 0]
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


__all__ = ["TEXT_POOLS", "TextEncoderSettings", "TextTransformer", "pool_tokens"]
