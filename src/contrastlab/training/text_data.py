"""The training sentences of a text run, tokenised once and cut into batches.

Unsupervised SimCSE trains on sentences: every sentence of the data files (both sentences of a
pairs file), duplicates removed (a repeated sentence in a batch would be its own negative).
Supervised SimCSE trains on pairs: those of the pairs files whose score is at least
``positive_threshold`` (every pair of a file without scores), with the hard negatives of files
that have them; with ``supervised_loss: cosent``, every scored pair with its score. All texts are
tokenised once; a batch is one index operation and a cut to its longest sentence. For the
bag-of-n-grams encoder (``text_backbone: ngrams``) the texts are featurised once instead
(:mod:`contrastlab.data.ngrams`) and the document frequency of each bucket over the distinct
training sentences is counted (the encoder's IDF).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.ngrams import (
    NgramCorpus,
    NgramFeaturizer,
    concat,
    document_frequency,
)
from contrastlab.data.text import read_pairs, read_sentences
from contrastlab.data.tokenizer import TextTokenizer, TokenBatch, train_tokenizer
from contrastlab.errors import DataError
from contrastlab.methods.simcse import SentenceBatch, SimCSESettings
from contrastlab.models.ngram_encoder import NgramEncoderSettings
from contrastlab.training.text_settings import TextTrainSettings, data_paths


@dataclass
class TextTrainingData:
    """``ids`` (G, M, L) token ids of M examples in G groups (anchors; positives; negatives),
    ``mask`` (G, M, L) their real tokens."""

    ids: Tensor
    mask: Tensor
    tokenizer: TextTokenizer | HfTokenizer
    skipped: list[str]
    scores: Tensor | None = None

    @property
    def groups(self) -> int:
        return self.ids.shape[0]

    def __len__(self) -> int:
        return self.ids.shape[1]

    def batch(self, indices: Tensor) -> SentenceBatch:
        """The examples ``indices`` as one :class:`SentenceBatch`, cut to their longest."""
        mask = self.mask[:, indices].flatten(0, 1)
        length = int(mask.sum(dim=1).max())
        ids = self.ids[:, indices].flatten(0, 1)[:, :length]
        return SentenceBatch(TokenBatch(ids, mask[:, :length]), self.groups,
                             None if self.scores is None else self.scores[indices])


@dataclass
class NgramTrainingData:
    """The examples of each group as bags of n-grams (``corpora[g]``), the featuriser, the
    document frequency of each bucket over the ``sentences`` distinct training sentences."""

    corpora: list[NgramCorpus]
    featurizer: NgramFeaturizer
    document_frequency: Tensor
    sentences: int
    skipped: list[str]
    scores: Tensor | None = None

    @property
    def groups(self) -> int:
        return len(self.corpora)

    def __len__(self) -> int:
        return len(self.corpora[0])

    def batch(self, indices: Tensor) -> SentenceBatch:
        return SentenceBatch(concat([corpus.batch(indices) for corpus in self.corpora]),
                             self.groups, None if self.scores is None else self.scores[indices])


def read_training_texts(train: TextTrainSettings, method: SimCSESettings
                        ) -> tuple[list[list[str]], list[str]]:
    """The texts of each group (``[sentences]`` or ``[anchors, positives(, negatives)]``) and
    the bad rows skipped."""
    skipped: list[str] = []
    if not method.supervised:
        sentences: dict[str, None] = {}
        for path in data_paths(train.data):
            read = read_sentences(path, train.skip_bad_files)
            skipped += read.skipped
            sentences.update(dict.fromkeys(read.texts))
        return [list(sentences)], skipped
    groups, _, skipped = _read_pairs(train, method)
    return groups, skipped


def _read_pairs(train: TextTrainSettings, method: SimCSESettings
                ) -> tuple[list[list[str]], list[float] | None, list[str]]:
    """The groups of the supervised texts, their scores (CoSENT) and the bad rows skipped."""
    cosent = method.supervised_loss == "cosent"
    groups: list[list[str]] = [[], [], []]
    scores: list[float] = []
    skipped: list[str] = []
    with_negatives = not cosent
    for path in data_paths(train.data):
        pairs = read_pairs(path, train.skip_bad_files)
        skipped += pairs.skipped
        if cosent:
            if pairs.scores is None:
                raise DataError(f"supervised_loss cosent needs a score on every pair; {path} "
                                "has none")
            groups[0] += pairs.first
            groups[1] += pairs.second
            scores += pairs.scores
            continue
        keep = [i for i in range(len(pairs)) if pairs.scores is None
                or pairs.scores[i] >= method.positive_threshold]
        groups[0] += [pairs.first[i] for i in keep]
        groups[1] += [pairs.second[i] for i in keep]
        with_negatives = with_negatives and pairs.negatives is not None
        groups[2] += [pairs.negatives[i] for i in keep] if pairs.negatives is not None else []
    if len(groups[0]) < 2:
        raise DataError(f"supervised SimCSE found {len(groups[0])} positive pair(s) in "
                        f"{train.data} (score >= positive_threshold {method.positive_threshold})"
                        ": lower --positive-threshold or give more pairs")
    return (groups if with_negatives else groups[:2]), (scores if cosent else None), skipped


def _read_groups(train: TextTrainSettings, method: SimCSESettings
                 ) -> tuple[list[list[str]], Tensor | None, list[str]]:
    if method.supervised:
        groups, scores, skipped = _read_pairs(train, method)
        return groups, None if scores is None else torch.tensor(scores), skipped
    groups, skipped = read_training_texts(train, method)
    return groups, None, skipped


def build_ngram_data(train: TextTrainSettings, method: SimCSESettings,
                     ngrams: NgramEncoderSettings) -> NgramTrainingData:
    """Read and featurise (see the module docstring)."""
    groups, scores, skipped = _read_groups(train, method)
    featurizer = NgramFeaturizer(ngrams.buckets, ngrams.char_ngrams, ngrams.word_ngrams)
    corpora = [NgramCorpus(featurizer.encode(texts)) for texts in groups]
    unique = _unique(groups)
    frequency = document_frequency(featurizer.encode(unique), ngrams.buckets)
    return NgramTrainingData(corpora, featurizer, frequency, len(unique), skipped, scores)


def build_training_data(train: TextTrainSettings, method: SimCSESettings, max_length: int,
                        say: Callable[[str], None] | None = None,
                        tokenizer: TextTokenizer | HfTokenizer | None = None
                        ) -> TextTrainingData:
    """Read, tokenise with ``tokenizer`` (a Hugging Face model folder's), else with the
    ``tokenizer`` setting's, else with one trained on the texts (see the module docstring)."""
    groups, scores, skipped = _read_groups(train, method)
    if tokenizer is None and train.tokenizer:
        tokenizer = TextTokenizer.from_file(train.tokenizer)
    elif tokenizer is None:
        tokenizer = train_tokenizer(_unique(groups), vocab_size=train.vocab_size)
        if say:
            say(f"trained a WordPiece tokenizer of {tokenizer.vocab_size} tokens on the data")
    encoded = [tokenizer.encode(texts, max_length) for texts in groups]
    length = max(batch.ids.shape[1] for batch in encoded)
    ids = torch.full((len(groups), len(groups[0]), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for g, batch in enumerate(encoded):
        ids[g, :, :batch.ids.shape[1]] = batch.ids
        mask[g, :, :batch.ids.shape[1]] = batch.mask
    return TextTrainingData(ids, mask, tokenizer, skipped, scores)


def _unique(groups: Sequence[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(text for texts in groups for text in texts))


__all__ = ["NgramTrainingData", "TextTrainingData", "build_ngram_data", "build_training_data",
           "read_training_texts"]
