"""SimCSE: sentence embeddings by contrastive learning, with dropout as the augmentation
(unsupervised) or with sentence pairs as positives (supervised).

Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021:

* **unsupervised** (Sec. 3): each sentence of the batch passes through the encoder twice; the two
  outputs differ only by their dropout masks and are a positive pair, the batch's other
  sentences the negatives (eq. 4). The two copies go through as one batch of 2N (as the paper's
  implementation does).
* **supervised** (Sec. 4): pairs (x_i, x_i^+) of related sentences are the positives (the paper:
  NLI entailment pairs) and optionally a hard negative x_i^- per anchor (a contradiction) joins
  the columns (eq. 5). From a file of scored pairs (STS), a pair whose score is at least
  ``positive_threshold`` is a positive pair; a file's ``negative`` column gives hard negatives.

The loss is :func:`contrastlab.losses.simcse.simcse_loss` (temperature 0.05, the paper's).
With ``supervised_loss: cosent`` a supervised run instead trains on every scored pair with
CoSENT's ranking loss (:func:`contrastlab.losses.cosent.cosent_loss`; not SimCSE's, an addition
of ours for small scored data such as STS-B's train pairs).
The method takes a :class:`SentenceBatch`: every sentence of the step in one batch, view-major
(anchors, then positives, then negatives): token ids in one padded tensor for the Transformer
encoder, or bags of hashed n-grams (:class:`~contrastlab.data.ngrams.NgramBatch`) for the
bag-of-n-grams encoder (:mod:`contrastlab.models.ngram_encoder`), whose ``token_drop`` leaves
n-grams out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from contrastlab.data.ngrams import NgramBatch
from contrastlab.data.tokenizer import TokenBatch
from contrastlab.losses.cosent import cosent_loss
from contrastlab.losses.simcse import simcse_loss
from contrastlab.methods import settings as common
from contrastlab.methods.base import StepOutput
from contrastlab.methods.settings import MethodSettings
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer
from contrastlab.settings import setting


@dataclass
class SimCSESettings(MethodSettings):
    """SimCSE's hyper-parameters."""

    name: ClassVar[str] = "simcse"

    temperature: float = common.temperature(0.05, "the paper (its Table D.1)")
    supervised: bool = setting(
        False, "Supervised SimCSE: pairs of the data are the positives (needs a pairs file); "
        "off: unsupervised, each sentence twice through dropout.", source="the paper's two forms")
    positive_threshold: float = setting(
        4.0, "Supervised, from scored pairs: a pair is a positive when its score is at least "
        "this (STS scores are 0-5); pairs without scores are all positives.",
        source="here: STS-B scores 4-5 mean 'mostly/completely equivalent'")
    token_drop: float = setting(
        0.0, "Share of each copy's tokens left out at random ([CLS]/[SEP] kept), on top of "
        "dropout; 0: the paper's dropout-only augmentation.",
        source="the paper (0; its Table 1 finds word deletion worse on BERT); here: helps "
        "encoders trained from scratch", ge=0, lt=1)
    supervised_loss: str = setting(
        "simcse", "Supervised loss: simcse (pairs scored >= positive_threshold as positives, "
        "in-batch negatives) or cosent (every scored pair, ranked by its score; CoSENT, Su "
        "2022).", source="the paper (simcse); here: cosent for small scored data",
        choices=("simcse", "cosent"))
    cosent_scale: float = setting(20.0, "CoSENT's scale lambda on the cosines.",
                                  source="CoSENT (Su 2022)", gt=0)
    loss_chunk_size: int | None = common.loss_chunk_size()


@dataclass
class SentenceBatch:
    """The sentences of one step: ``tokens`` holds ``groups`` blocks of N rows (anchors, then
    positives, then hard negatives when given), as token ids or as bags of n-grams; ``scores``
    (N,) the pairs' gold scores (CoSENT)."""

    tokens: TokenBatch | NgramBatch
    groups: int = 1
    scores: Tensor | None = None

    def to(self, device: torch.device | str) -> SentenceBatch:
        return SentenceBatch(self.tokens.to(device), self.groups,
                             None if self.scores is None else self.scores.to(device))


def drop_tokens(mask: Tensor, rate: float) -> Tensor:
    """``mask`` with each inner token (not the first or last real one: ``[CLS]``, ``[SEP]``)
    left out with probability ``rate`` (global torch RNG); padding stays out."""
    lengths = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    inner = (positions > 0) & (positions < lengths - 1)
    dropped = inner & (torch.rand(mask.shape, device=mask.device) < rate)
    kept = mask & ~dropped
    keep_one = inner & ~(kept & inner).any(dim=1, keepdim=True)  # never drop every word
    return kept | (keep_one & mask)


class SimCSE(nn.Module):
    """SimCSE on a :class:`~contrastlab.models.text_encoder.TextTransformer` (see the module
    docstring); ``encode(ids, mask)`` is the sentence embedding used for evaluation."""

    name = "simcse"
    Settings = SimCSESettings

    def __init__(self, encoder: TextTransformer | NgramEncoder | HfTextEncoder,
                 settings: SimCSESettings | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        values = {} if settings is None else settings.to_dict()
        values.update(overrides)
        self.settings = SimCSESettings.from_mapping(values, "the settings of method 'simcse'")
        self.backbone = encoder

    def training_step(self, batch: SentenceBatch) -> StepOutput:
        tokens = batch.tokens
        groups = 2 if batch.groups == 1 else batch.groups
        if batch.groups == 1:  # unsupervised: the same sentences twice, as one 2N batch
            tokens = (tokens.repeat(2) if isinstance(tokens, NgramBatch)
                      else TokenBatch(tokens.ids.repeat(2, 1), tokens.mask.repeat(2, 1)))
        if groups not in (2, 3) or len(tokens) % groups:
            raise ValueError(f"a SentenceBatch holds 1, 2 or 3 groups of N rows, got {groups} "
                             f"groups over {len(batch.tokens)} rows")
        if self.settings.token_drop > 0 and self.training:
            tokens = (tokens.drop(self.settings.token_drop) if isinstance(tokens, NgramBatch)
                      else TokenBatch(tokens.ids, drop_tokens(tokens.mask,
                                                              self.settings.token_drop)))
        embeddings = self.embed(tokens).chunk(groups, dim=0)
        if self.settings.supervised and self.settings.supervised_loss == "cosent":
            if batch.scores is None:
                raise ValueError("CoSENT needs the pairs' scores (SentenceBatch.scores)")
            loss = cosent_loss(embeddings[0], embeddings[1], batch.scores,
                               self.settings.cosent_scale)
        else:
            loss = simcse_loss(embeddings[0], embeddings[1], self.settings.temperature,
                               embeddings[2] if groups == 3 else None,
                               chunk_size=self.settings.loss_chunk_size)
        return StepOutput(loss=loss)

    def embed(self, tokens: TokenBatch | NgramBatch) -> Tensor:
        """The encoder's sentence embeddings of a token batch or of a batch of n-gram bags."""
        if isinstance(tokens, NgramBatch):
            return self.backbone(tokens.ids, tokens.weights, tokens.offsets)
        return self.backbone(tokens.ids, tokens.mask)

    def forward(self, batch: SentenceBatch) -> StepOutput:
        return self.training_step(batch)

    def encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The sentence embeddings (the encoder's pooled output)."""
        return self.backbone(ids, mask)


__all__ = ["SentenceBatch", "SimCSE", "SimCSESettings"]
