r"""Hashed n-gram features of sentences: the input of the bag-of-n-grams text encoder
(:mod:`contrastlab.models.ngram_encoder`; the fastText / sent2vec family, Joulin et al. 2017,
Pagliardini et al. 2018). Our own featuriser, not a Hugging Face tokenizer:

1. the text is lower-cased and cut into tokens: runs of word characters (``\w+``) and single
   punctuation marks (``[^\w\s]``);
2. each token ``t`` gives the character n-grams of ``<t>`` (word boundaries marked by ``<`` and
   ``>``, as fastText's) for every n of ``char_ngrams`` (lo..hi), prefixed ``c``;
3. word n-grams of 1..``word_ngrams`` consecutive tokens, joined by a space and prefixed ``w``;
4. each feature string is hashed into one of ``buckets`` buckets with CRC-32 of its UTF-8 bytes
   (:func:`zlib.crc32`, the same in every process, unlike Python's salted ``hash()``) modulo
   ``buckets``;
5. a sentence is the set of its distinct buckets, each with the sublinear term frequency
   :math:`1 + \log c` of its count :math:`c` in the sentence (scikit-learn's ``sublinear_tf``).

A batch of sentences is flat (:class:`NgramBatch`): ``ids`` and ``weights`` of every sentence's
buckets one after the other, ``offsets`` where each sentence starts (``nn.EmbeddingBag``'s
layout). :func:`document_frequency` counts the sentences each bucket occurs in, from which the
encoder's inverse document frequency comes.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """The lower-cased word and punctuation tokens of ``text``."""
    return WORD_PATTERN.findall(text.lower())


def ngram_features(text: str, char_ngrams: tuple[int, int] = (2, 4), word_ngrams: int = 1
                   ) -> list[str]:
    """The feature strings of ``text`` (see the module docstring), repeats kept."""
    found: list[str] = []
    words = tokens(text)
    low, high = char_ngrams
    for word in words:
        marked = f"<{word}>"
        for n in range(low, high + 1):
            found += ["c" + marked[i:i + n] for i in range(len(marked) - n + 1)]
    for n in range(1, word_ngrams + 1):
        found += ["w" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return found


def bucket_of(feature: str, buckets: int) -> int:
    """The bucket of one feature string: CRC-32 of its UTF-8 bytes modulo ``buckets``."""
    return zlib.crc32(feature.encode("utf-8")) % buckets


@dataclass
class NgramBatch:
    """Sentences as bags of hashed n-grams: ``ids`` (T,) buckets, ``weights`` (T,) their
    sublinear term frequencies, ``offsets`` (N,) where each of the N sentences starts."""

    ids: Tensor
    weights: Tensor
    offsets: Tensor

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def to(self, device: torch.device | str) -> NgramBatch:
        return NgramBatch(self.ids.to(device), self.weights.to(device), self.offsets.to(device))

    def lengths(self) -> Tensor:
        """(N,) how many buckets each sentence has."""
        ends = torch.cat([self.offsets[1:], self.offsets.new_tensor([self.ids.shape[0]])])
        return ends - self.offsets

    def repeat(self, times: int) -> NgramBatch:
        """The N sentences ``times`` times over (N * times sentences)."""
        return concat([self] * times)

    def drop(self, rate: float) -> NgramBatch:
        """Each bucket left out (weight 0) with probability ``rate`` (global torch RNG); a
        sentence keeps at least its first bucket."""
        kept = torch.rand(self.weights.shape, device=self.weights.device) >= rate
        emptied = ~_any_per_sentence(kept, self) & (self.lengths() > 0)
        kept[self.offsets[emptied]] = True
        return NgramBatch(self.ids, self.weights * kept, self.offsets)


def _any_per_sentence(flags: Tensor, batch: NgramBatch) -> Tensor:
    sentence = torch.repeat_interleave(torch.arange(len(batch), device=flags.device),
                                       batch.lengths())
    count = torch.zeros(len(batch), device=flags.device).index_add_(0, sentence, flags.float())
    return count > 0


def concat(batches: Sequence[NgramBatch]) -> NgramBatch:
    """The sentences of ``batches`` one after the other, as one batch."""
    shifts, total = [], 0
    for batch in batches:
        shifts.append(total)
        total += batch.ids.shape[0]
    return NgramBatch(torch.cat([b.ids for b in batches]), torch.cat([b.weights for b in batches]),
                      torch.cat([b.offsets + s for b, s in zip(batches, shifts, strict=True)]))


class NgramFeaturizer:
    """Sentences -> :class:`NgramBatch` (see the module docstring); a plain, picklable object
    whose settings are all it holds."""

    def __init__(self, buckets: int = 2 ** 18, char_ngrams: tuple[int, int] = (2, 4),
                 word_ngrams: int = 1) -> None:
        if buckets < 1 or char_ngrams[0] < 1 or char_ngrams[0] > char_ngrams[1] \
                or word_ngrams < 0:
            raise ValueError(f"bad featuriser settings: buckets {buckets}, char_ngrams "
                             f"{char_ngrams}, word_ngrams {word_ngrams}")
        self.buckets = buckets
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.word_ngrams = word_ngrams
        self._cache: dict[str, int] = {}

    def buckets_of(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The distinct buckets of ``text`` (sorted) and their sublinear term frequencies."""
        cache = self._cache
        hashed = []
        for feature in ngram_features(text, self.char_ngrams, self.word_ngrams):
            bucket = cache.get(feature)
            if bucket is None:
                bucket = cache[feature] = bucket_of(feature, self.buckets)
            hashed.append(bucket)
        ids, counts = np.unique(np.asarray(hashed, dtype=np.int64), return_counts=True)
        return ids, 1.0 + np.log(counts)

    def encode(self, texts: Sequence[str]) -> NgramBatch:
        """The bags of ``texts`` as one flat batch."""
        ids, weights, offsets, start = [], [], [], 0
        for text in texts:
            bucket_ids, tf = self.buckets_of(text)
            ids.append(bucket_ids)
            weights.append(tf)
            offsets.append(start)
            start += len(bucket_ids)
        if not ids:
            return NgramBatch(torch.zeros(0, dtype=torch.long), torch.zeros(0),
                              torch.zeros(0, dtype=torch.long))
        return NgramBatch(torch.from_numpy(np.concatenate(ids)),
                          torch.from_numpy(np.concatenate(weights)).float(),
                          torch.tensor(offsets, dtype=torch.long))


class NgramCorpus:
    """Sentences encoded once; :meth:`batch` gathers any of them as an :class:`NgramBatch`."""

    def __init__(self, encoded: NgramBatch) -> None:
        self.encoded = encoded
        self.starts = encoded.offsets
        self.lengths_ = encoded.lengths()

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, indices: Tensor) -> NgramBatch:
        lengths = self.lengths_[indices]
        offsets = torch.cumsum(lengths, 0) - lengths
        positions = (torch.repeat_interleave(self.starts[indices] - offsets, lengths)
                     + torch.arange(int(lengths.sum())))
        return NgramBatch(self.encoded.ids[positions], self.encoded.weights[positions], offsets)


def document_frequency(batch: NgramBatch, buckets: int) -> Tensor:
    """(buckets,) float: in how many sentences of ``batch`` each bucket occurs (a sentence's
    buckets are distinct)."""
    return torch.bincount(batch.ids, minlength=buckets).float()


__all__ = ["NgramBatch", "NgramCorpus", "NgramFeaturizer", "bucket_of", "concat",
           "document_frequency", "ngram_features", "tokens"]
