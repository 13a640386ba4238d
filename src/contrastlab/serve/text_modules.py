r"""The text towers of text and image-text runs as plain modules of tensors: what a run's text
encoder computes, in a form that serving runs and that ONNX export traces.

* :class:`TransformerTextModule`: ``(input_ids, attention_mask)`` int64 (N, L) -> (N, D): the
  run's :class:`~contrastlab.models.text_encoder.TextTransformer` (padding is every position
  whose mask is 0), followed by the image-text run's text projection :math:`W_t` when there is
  one (CLIP's shared space; not normalised here).
* :class:`NgramTextModule`: ``(ids, weights, offsets)`` -> (N, D), the bag-of-n-grams encoder
  (:mod:`contrastlab.models.ngram_encoder`); with ``traceable=True`` (what ONNX export traces)
  its forward is rewritten with operations every ONNX runtime has
  (Gather, ScatterElements with ``add``, CumSum) instead of ``nn.EmbeddingBag``,
  ``repeat_interleave`` and ``index_add``, whose ONNX forms fail at run time on dynamic shapes:

  .. math::

      s_t = \#\{i : o_i \le t\} - 1, \qquad
      h_n = \frac{\sum_{t: s_t = n} w_t\, \mathrm{idf}(b_t)\, E_{b_t}}
                 {\max(\sum_{t: s_t = n} w_t\, \mathrm{idf}(b_t),\ 10^{-6})}

  where :math:`o` are the sentences' start offsets into the flat bucket list :math:`b` (the
  sentence :math:`s_t` of position :math:`t` is counted from the offsets, so sentences without
  any n-gram, whose offsets repeat, are handled) and :math:`w` the sublinear term frequencies.
  It equals :meth:`NgramEncoder.forward` in eval mode (the tests compare them, and the export's
  parity check compares the exported rewrite with the encoder's own forward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer

#: input names of the exported text towers, by backbone
TRANSFORMER_INPUTS = ("input_ids", "attention_mask")
NGRAM_INPUTS = ("ids", "weights", "offsets")


class TransformerTextModule(nn.Module):
    """A Transformer text encoder (and an optional projection) taking ``(input_ids,
    attention_mask)``; the mask may be int64 (Hugging Face's convention) or bool."""

    def __init__(self, encoder: TextTransformer, projection: nn.Linear | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection
        self.max_length = encoder.max_length
        self.output_dim = (encoder.output_dim if projection is None
                           else int(projection.out_features))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        features = self.encoder(input_ids, attention_mask != 0)
        return features if self.projection is None else self.projection(features)


class NgramTextModule(nn.Module):
    """The bag-of-n-grams encoder taking ``(ids, weights, offsets)``; ``traceable``: in the
    ONNX-friendly form (see the module doc)."""

    def __init__(self, encoder: NgramEncoder, traceable: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.traceable = traceable
        self.output_dim = encoder.output_dim

    def forward(self, ids: Tensor, weights: Tensor, offsets: Tensor) -> Tensor:
        if not self.traceable:
            return self.encoder(ids, weights, offsets)
        w = weights * self.encoder.idf[ids]
        rows = self.encoder.table.weight[ids] * w.unsqueeze(1)
        tokens = ids.shape[0]
        starts = torch.zeros(tokens + 1, dtype=w.dtype, device=w.device).scatter_add(
            0, offsets, torch.ones_like(offsets, dtype=w.dtype))
        sentence = (torch.cumsum(starts[:tokens], 0) - 1).long()
        count = offsets.shape[0]
        summed = torch.zeros(count, rows.shape[1], dtype=w.dtype, device=w.device).scatter_add(
            0, sentence.unsqueeze(1).expand_as(rows), rows)
        total = torch.zeros(count, dtype=w.dtype, device=w.device).scatter_add(0, sentence, w)
        return summed / total.clamp_min(1e-6).unsqueeze(1)


__all__ = ["NGRAM_INPUTS", "TRANSFORMER_INPUTS", "NgramTextModule", "TransformerTextModule"]
