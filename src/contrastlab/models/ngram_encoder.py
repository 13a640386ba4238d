r"""A bag-of-n-grams sentence encoder (the fastText / sent2vec family: Joulin et al., "Bag of
Tricks for Efficient Text Classification", 2017; Pagliardini et al., "Unsupervised Learning of
Sentence Embeddings using Compositional n-Gram Features", 2018).

A sentence is a bag of hashed n-grams (:mod:`contrastlab.data.ngrams`: bucket ids :math:`b_k`
with sublinear term frequencies :math:`t_k`). Its embedding is the weighted mean of their rows
of one embedding table :math:`E` (``buckets`` x ``dim``):

.. math::

    h = \frac{\sum_k w_k E_{b_k}}{\sum_k w_k}, \qquad w_k = t_k \cdot \mathrm{idf}(b_k),
    \qquad \mathrm{idf}(b) = \log\frac{1 + n}{1 + \mathrm{df}(b)} + 1

where :math:`\mathrm{df}(b)` is the number of the :math:`n` training sentences holding bucket
:math:`b` (scikit-learn's smoothed IDF; with ``idf`` off every :math:`\mathrm{idf}(b) = 1`). The
IDF is a buffer set from the training sentences (:meth:`NgramEncoder.set_idf`) and saved with
the model, so a run embeds new text exactly as it was trained. The weighting is SIF-like (Arora
et al. 2017: rare features count more).

At initialisation :math:`E` is Gaussian, so :math:`h` is a random projection of the sentence's
TF-IDF vector and cosine similarities are close to TF-IDF's (Johnson-Lindenstrauss): training
starts from a strong baseline. Dropout (``dropout``) on :math:`h` during training; the
augmentation that matters for unsupervised SimCSE is leaving n-grams out
(:meth:`contrastlab.data.ngrams.NgramBatch.drop`, the method's ``token_drop``).

The table gets sparse gradients (only the rows of a batch's n-grams): the trainer steps it with
``torch.optim.SparseAdam``. Its initialisation comes from a generator of its own seeded with
``seed`` (:func:`initial_table`), not from the global random state, so that the rows training
never touches (the n-grams absent from the training text) can be regenerated exactly from the
seed: a checkpoint stores only the touched rows (:mod:`contrastlab.runs.ngram_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from contrastlab.models.backbones import Backbone
from contrastlab.settings import Settings, setting


@dataclass
class NgramEncoderSettings(Settings):
    """The featuriser and weighting of the bag-of-n-grams encoder (the ``ngrams:`` section of a
    text run; ``dim`` and ``dropout`` come from the ``encoder:`` section)."""

    section: ClassVar[str] = "ngrams"

    buckets: int = setting(2 ** 18, "Hash buckets of the n-gram embedding table (rows).",
                           source="here: STS-B train+dev hold ~41k distinct char 2-4-grams and "
                           "words", ge=16)
    char_ngrams: tuple[int, int] = setting(
        (2, 4), "Character n-gram lengths (min max) of each word marked <word>.",
        source="here: TF-IDF of these features on STS-B dev, 2-4: 78.5, 2-5: 78.1",
        ge=1, ordered=True)
    word_ngrams: int = setting(1, "Word n-grams of 1..N words (0: none).",
                               source="fastText (1: unigrams)", ge=0)
    idf: bool = setting(True, "Weight each n-gram by its inverse document frequency over the "
                        "training sentences (stored with the model).", source="here (SIF-like)")
    init_std: float = setting(1.0, "Standard deviation of the table's Gaussian initialisation.",
                              source="here (the scale of the Adam steps is relative to it)",
                              gt=0)


def initial_table(buckets: int, dim: int, std: float, seed: int) -> Tensor:
    """The table's initialisation: (buckets, dim) float32 from N(0, std^2), drawn by a CPU
    generator seeded with ``seed``: its second draw of that shape, the values the encoder had
    when it took the first draw (``nn.EmbeddingBag``'s default initialisation) and the second
    from torch's global generator just after ``torch.manual_seed(seed)``, so the runs and
    figures of before keep their initialisation. The same values on every call; a checkpoint
    records a digest of them (:func:`contrastlab.runs.ngram_table.table_digest`), so a torch
    whose generator draws otherwise is caught rather than trusted."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.empty(buckets, dim)
    table.normal_(generator=generator)
    return table.normal_(0.0, std, generator=generator)


class NgramEncoder(Backbone):
    """``forward(ids, weights, offsets)`` -> (N, dim) (see the module docstring); ``seed``
    seeds the table's initialisation (:func:`initial_table`)."""

    def __init__(self, settings: NgramEncoderSettings | None = None, dim: int = 256,
                 dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        s = settings or NgramEncoderSettings()
        self.settings = s
        self.output_dim = dim
        self.seed = seed
        self.table = nn.EmbeddingBag(s.buckets, dim, mode="sum", sparse=True,
                                     _weight=initial_table(s.buckets, dim, s.init_std, seed))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("idf", torch.ones(s.buckets))

    @torch.no_grad()
    def set_idf(self, document_frequency: Tensor, sentences: int) -> None:
        """IDF from the per-bucket document frequency over ``sentences`` training sentences
        (all ones when the settings turn IDF off)."""
        if self.settings.idf:
            self.idf.copy_(torch.log((1.0 + sentences) / (1.0 + document_frequency)) + 1.0)
        else:
            self.idf.fill_(1.0)

    def forward(self, ids: Tensor, weights: Tensor, offsets: Tensor) -> Tensor:
        w = weights * self.idf[ids]
        summed = self.table(ids, offsets, per_sample_weights=w)
        ends = torch.cat([offsets[1:], offsets.new_tensor([ids.shape[0]])])
        sentence = torch.repeat_interleave(torch.arange(offsets.shape[0], device=ids.device),
                                           ends - offsets)
        total = torch.zeros(offsets.shape[0], device=w.device, dtype=w.dtype)
        total = total.index_add(0, sentence, w)
        return self.dropout(summed / total.clamp_min(1e-6).unsqueeze(1))


__all__ = ["NgramEncoder", "NgramEncoderSettings", "initial_table"]
