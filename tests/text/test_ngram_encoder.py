"""The bag-of-n-grams encoder: its featuriser (n-grams, hashing stable across processes), the
IDF against a direct count, the encoder's weighted mean, shape and gradients, n-gram dropout,
and CoSENT's loss against a loop."""

from __future__ import annotations

import math
import subprocess
import sys
import zlib

import pytest
import torch
import torch.nn.functional as F

from contrastlab.data.ngrams import (
    NgramCorpus,
    NgramFeaturizer,
    concat,
    document_frequency,
    ngram_features,
)
from contrastlab.losses.cosent import cosent_loss
from contrastlab.methods.simcse import SentenceBatch, SimCSE, SimCSESettings
from contrastlab.models.ngram_encoder import NgramEncoder, NgramEncoderSettings

TEXTS = ["A man plays a guitar.", "a man plays the guitar", "Two dogs run!", "a cat"]


def test_features_are_char_ngrams_of_marked_words_and_word_ngrams() -> None:
    found = ngram_features("Ab, c", char_ngrams=(2, 3), word_ngrams=2)
    chars = ["c<a", "cab", "cb>", "c<ab", "cab>", "c<,", "c,>", "c<,>", "c<c", "cc>", "c<c>"]
    words = ["wab", "w,", "wc", "wab ,", "w, c"]
    assert sorted(found) == sorted(chars + words)
    assert ngram_features("x", (1, 1), 0) == ["c<", "cx", "c>"]


def test_buckets_are_crc32_and_the_same_in_another_process() -> None:
    featurizer = NgramFeaturizer(buckets=1000, char_ngrams=(2, 4), word_ngrams=1)
    ids, tf = featurizer.buckets_of("the cat the")
    expected = sorted({zlib.crc32(f.encode()) % 1000
                       for f in ngram_features("the cat the", (2, 4), 1)})
    assert ids.tolist() == expected
    the = zlib.crc32(b"wthe") % 1000
    assert math.isclose(tf[ids.tolist().index(the)], 1 + math.log(2))  # sublinear tf
    code = ("from contrastlab.data.ngrams import NgramFeaturizer as F;"
            "print(F(1000).buckets_of('the cat the')[0].tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", **_env()})
    assert other.stdout.strip() == str(ids.tolist())


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


def test_idf_equals_a_direct_count() -> None:
    featurizer = NgramFeaturizer(buckets=64, word_ngrams=1)
    frequency = document_frequency(featurizer.encode(TEXTS), 64)
    sets = [set(featurizer.buckets_of(t)[0].tolist()) for t in TEXTS]
    for bucket in range(64):
        assert frequency[bucket] == sum(bucket in s for s in sets)
    encoder = NgramEncoder(NgramEncoderSettings(buckets=64), dim=8)
    encoder.set_idf(frequency, len(TEXTS))
    for bucket in range(64):
        df = sum(bucket in s for s in sets)
        assert math.isclose(float(encoder.idf[bucket]), math.log(5 / (1 + df)) + 1,
                            rel_tol=1e-6)
    off = NgramEncoder(NgramEncoderSettings(buckets=64, idf=False), dim=8)
    off.set_idf(frequency, len(TEXTS))
    assert torch.all(off.idf == 1)


def test_encoder_is_the_idf_weighted_mean_with_gradients() -> None:
    torch.manual_seed(0)
    featurizer = NgramFeaturizer(buckets=128)
    encoder = NgramEncoder(NgramEncoderSettings(buckets=128), dim=16)
    encoder.set_idf(document_frequency(featurizer.encode(TEXTS), 128), len(TEXTS))
    bags = featurizer.encode(TEXTS)
    out = encoder(bags.ids, bags.weights, bags.offsets)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    ids, tf = featurizer.buckets_of(TEXTS[2])
    w = torch.tensor(tf, dtype=torch.float32) * encoder.idf[torch.from_numpy(ids)]
    expected = (w[:, None] * encoder.table.weight[torch.from_numpy(ids)]).sum(0) / w.sum()
    torch.testing.assert_close(out[2], expected)
    out.sum().backward()
    grad = encoder.table.weight.grad
    assert grad.is_sparse and set(grad.coalesce().indices()[0].tolist()) == set(
        bags.ids.tolist())


def test_corpus_batches_and_drop_keep_a_feature_per_sentence() -> None:
    featurizer = NgramFeaturizer(buckets=256)
    corpus = NgramCorpus(featurizer.encode(TEXTS))
    picked = corpus.batch(torch.tensor([3, 1]))
    alone = featurizer.encode([TEXTS[3], TEXTS[1]])
    assert torch.equal(picked.ids, alone.ids) and torch.equal(picked.offsets, alone.offsets)
    twice = picked.repeat(2)
    assert len(twice) == 4 and torch.equal(twice.ids, torch.cat([alone.ids, alone.ids]))
    torch.manual_seed(0)
    dropped = concat([picked, picked]).drop(0.999)
    for start, length in zip(dropped.offsets.tolist(), dropped.lengths().tolist(), strict=True):
        assert (dropped.weights[start:start + length] > 0).sum() >= 1


def test_simcse_trains_the_ngram_encoder_unsupervised_and_with_cosent() -> None:
    torch.manual_seed(0)
    featurizer = NgramFeaturizer(buckets=256)
    encoder = NgramEncoder(NgramEncoderSettings(buckets=256), dim=8, dropout=0.1)
    method = SimCSE(encoder, SimCSESettings(token_drop=0.3))
    loss = method(SentenceBatch(featurizer.encode(TEXTS))).loss
    loss.backward()
    assert torch.isfinite(loss) and encoder.table.weight.grad is not None
    cosent = SimCSE(encoder, SimCSESettings(supervised=True, supervised_loss="cosent"))
    pairs = concat([featurizer.encode(TEXTS[:2]), featurizer.encode(TEXTS[2:])])
    out = cosent(SentenceBatch(pairs, 2, torch.tensor([4.0, 1.0]))).loss
    assert torch.isfinite(out)


def test_cosent_matches_a_loop() -> None:
    torch.manual_seed(0)
    first, second = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4)
    scores = torch.tensor([3.0, 1.0, 3.0, 0.5, 4.0])
    cos = F.cosine_similarity(first, second, dim=1) * 20
    terms = [torch.zeros(())] + [cos[j] - cos[i] for i in range(5) for j in range(5)
                                 if scores[i] > scores[j]]
    expected = torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(cosent_loss(first, second, scores, 20.0), expected)
    assert cosent_loss(first, second, torch.ones(5)).item() == pytest.approx(0.0)
