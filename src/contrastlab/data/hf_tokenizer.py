"""The tokenizer of a local Hugging Face model folder (``--text-backbone hf:PATH``), with the
interface of :class:`contrastlab.data.tokenizer.TextTokenizer`: ``encode(texts, max_length)``
gives a padded :class:`TokenBatch`, ``pad_id`` and ``vocab_size`` say how.

The folder's own tokenizer (``transformers.AutoTokenizer``, loaded by
:mod:`contrastlab.runs.hf_folder` from local files only) does the work: its normalisation,
sub-words and special tokens (``[CLS] ... [SEP]`` for BERT), truncation to ``max_length``
tokens with the special tokens kept, padding with its pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from contrastlab.data.tokenizer import TokenBatch


class HfTokenizer:
    """A ``transformers`` tokenizer giving :class:`TokenBatch` es (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        tokenizer.padding_side = "right"  # the [CLS] pooling reads position 0
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.vocab_size = len(tokenizer)

    def encode(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        """Ids and mask of ``texts``, each cut to ``max_length`` tokens (special tokens
        included), padded to the longest."""
        if not texts:
            return TokenBatch(torch.zeros(0, 1, dtype=torch.long),
                              torch.zeros(0, 1, dtype=torch.bool))
        if self.tokenizer.pad_token_id is None:  # e.g. GPT-2: padding is masked out anyway
            rows = self.tokenizer(list(texts), truncation=True, max_length=max_length)
            length = max(1, max(len(row) for row in rows["input_ids"]))
            ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(texts), length), dtype=torch.bool)
            for i, row in enumerate(rows["input_ids"]):
                ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, :len(row)] = True
        else:
            encoded = self.tokenizer(list(texts), padding="longest", truncation=True,
                                     max_length=max_length, return_tensors="pt")
            ids = encoded["input_ids"].long()
            mask = encoded["attention_mask"].bool()
        mask[:, 0] |= ~mask.any(dim=1)  # an empty text still has one position to pool
        return TokenBatch(ids, mask)


__all__ = ["HfTokenizer"]
