r"""A Hugging Face ``transformers`` model as the sentence encoder (``--text-backbone hf:PATH``;
the folder is read by :mod:`contrastlab.runs.hf_folder`).

The model (``AutoModel``: BERT, MiniLM, RoBERTa, ... without a task head) maps token ids and
their attention mask to token outputs :math:`x_t` (its ``last_hidden_state``); the sentence
embedding is pooled from them as the Transformer encoder's is
(:func:`contrastlab.models.text_encoder.pool_tokens`):

* ``mean`` (default): :math:`h = \frac{1}{|M|} \sum_{t \in M} x_t` over the real tokens
  :math:`M` (sentence-transformers' pooling, Reimers & Gurevych 2019);
* ``cls``: :math:`h = x_0`, the ``[CLS]`` output before BERT's pooler (SimCSE's evaluation
  pooling for its unsupervised models, Gao et al. 2021, Sec. 3 and Table C.1).

Dropout is the model's own (BERT: ``hidden_dropout_prob`` and ``attention_probs_dropout_prob``,
0.1): in training mode two passes of a sentence differ by their dropout masks, SimCSE's
augmentation; in eval mode the encoder is deterministic.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from contrastlab.models.backbones import Backbone
from contrastlab.models.text_encoder import pool_tokens


class HfTextEncoder(Backbone):
    """``forward(ids, mask)`` -> (N, hidden size) pooled outputs of ``model`` (see the module
    docstring); ``max_length`` is the most tokens a sentence keeps."""

    def __init__(self, model: nn.Module, pool: str = "mean", max_length: int = 48) -> None:
        super().__init__()
        self.model = model
        self.pool = pool
        self.max_length = max_length
        config: Any = model.config
        self.output_dim = int(getattr(config, "hidden_size", None)
                              or model.get_input_embeddings().embedding_dim)

    def token_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """(N, L) ids and mask -> (N, L, hidden size) token outputs."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"{ids.shape[1]} tokens, but this encoder takes at most "
                             f"{self.max_length}")
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return pool_tokens(self.token_features(ids, mask), mask, self.pool)


__all__ = ["HfTextEncoder"]
