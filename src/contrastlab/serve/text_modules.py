r"""The text towers of text and image-text runs as plain modules of tensors: what a run's text
encoder computes, in a form that serving runs and that ONNX export traces.

* :class:`TransformerTextModule`: ``(input_ids, attention_mask)`` int64 (N, L) -> (N, D): the
  run's :class:`~contrastlab.models.text_encoder.TextTransformer` (padding is every position
  whose mask is 0), followed by the image-text run's text projection :math:`W_t` when there is
  one (CLIP's shared space; not normalised here).
* :class:`NgramTextModule`: ``(ids, weights, offsets)`` -> (N, D), the bag-of-n-grams encoder
  (:mod:`contrastlab.models.ngram_encoder`); with ``traceable=True`` (what ONNX export traces)
  its forward is rewritten with operations every ONNX runtime runs fast (Gather, CumSum)
  instead of ``nn.EmbeddingBag``, ``repeat_interleave`` and ``index_add``, whose ONNX forms fail
  at run time on dynamic shapes (and ScatterElements with ``add``, which works but costs ~30 ns
  an element in ONNX Runtime). Sentences are contiguous in the flat layout, so each one's sum is
  a difference of running sums (in float64, so that the running sums over a whole batch lose
  nothing a sentence's sum needs):

  .. math::

      R_t = \sum_{u < t} w_u\, \mathrm{idf}(b_u)\, E_{b_u}, \qquad
      W_t = \sum_{u < t} w_u\, \mathrm{idf}(b_u), \qquad
      h_n = \frac{R_{e_n} - R_{o_n}}{\max(W_{e_n} - W_{o_n},\ 10^{-6})}

  where :math:`o_n` is sentence :math:`n`'s start offset into the flat bucket list :math:`b`,
  :math:`e_n = o_{n+1}` (the list's length for the last sentence) its end and :math:`w` the
  sublinear term frequencies; a sentence without any n-gram has :math:`e_n = o_n` and gets 0,
  as the encoder gives.
  It equals :meth:`NgramEncoder.forward` in eval mode (the tests compare them, and the export's
  parity check compares the exported rewrite with the encoder's own forward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer

#: input names of the exported text towers, by backbone
TRANSFORMER_INPUTS = ("input_ids", "attention_mask")
NGRAM_INPUTS = ("ids", "weights", "offsets")


class TransformerTextModule(nn.Module):
    """A Transformer text encoder (ours or a Hugging Face model's, :class:`HfTextEncoder`) and
    an optional projection, taking ``(input_ids, attention_mask)``; the mask may be int64
    (Hugging Face's convention) or bool."""

    def __init__(self, encoder: TextTransformer | HfTextEncoder,
                 projection: nn.Linear | None = None) -> None:
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
        rows = (self.encoder.table.weight[ids] * w.unsqueeze(1)).double()
        zero = rows.new_zeros(1, rows.shape[1])
        running = torch.cat([zero, torch.cumsum(rows, 0)])  # (T + 1, D): sums of rows < t
        weight_sums = torch.cat([zero[:, 0], torch.cumsum(w.double(), 0)])
        ends = torch.cat([offsets[1:], offsets[:1] * 0 + ids.shape[0]])
        summed = running[ends] - running[offsets]
        total = weight_sums[ends] - weight_sums[offsets]
        return (summed / total.clamp_min(1e-6).unsqueeze(1)).to(weights.dtype)

__all__ = ["NGRAM_INPUTS", "TRANSFORMER_INPUTS", "NgramTextModule", "TransformerTextModule"]
