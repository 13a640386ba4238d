"""The n-gram table in a checkpoint (runs/ngram_table.py): only the touched rows are stored,
and the table and SparseAdam moments rebuilt from them and the seed equal the trained ones bit
for bit; an initialisation that regenerates otherwise is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastlab.data.ngrams import NgramFeaturizer
from contrastlab.errors import CheckpointError
from contrastlab.models.ngram_encoder import NgramEncoder, NgramEncoderSettings, initial_table
from contrastlab.runs.ngram_table import (
    pack_sparse_adam,
    pack_table,
    table_digest,
    touched_rows,
    unpack_sparse_adam,
    unpack_table,
)

SENTENCES = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
             "a cat sleeps on a sofa"]
SETTINGS = NgramEncoderSettings(buckets=4096, init_std=0.5)


def trained(seed: int = 7) -> tuple[NgramEncoder, torch.optim.Optimizer, torch.Tensor]:
    """An encoder stepped 5 times by SparseAdam on the sentences' bags, and their buckets."""
    bags = NgramFeaturizer(SETTINGS.buckets).encode(SENTENCES)
    encoder = NgramEncoder(SETTINGS, dim=8, seed=seed)
    optimizer = torch.optim.SparseAdam([encoder.table.weight], lr=0.05)
    target = torch.randn(len(SENTENCES), 8, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        optimizer.zero_grad()
        loss = (encoder(bags.ids, bags.weights, bags.offsets) - target).pow(2).sum()
        loss.backward()
        optimizer.step()
    return encoder, optimizer, touched_rows(bags.ids)


def test_initialisation_is_the_seeded_draw_of_before() -> None:
    """initial_table gives what the encoder had when nn.EmbeddingBag drew first and
    nn.init.normal_ second from torch's global generator just after manual_seed."""
    torch.manual_seed(3)
    table = nn.EmbeddingBag(300, 16, mode="sum", sparse=True)
    nn.init.normal_(table.weight, std=0.5)
    assert torch.equal(initial_table(300, 16, 0.5, seed=3), table.weight.detach())
    assert torch.equal(NgramEncoder(NgramEncoderSettings(buckets=300, init_std=0.5), 16,
                                    seed=3).table.weight.detach(), table.weight.detach())


def test_rebuilt_table_and_moments_equal_the_trained_ones() -> None:
    encoder, optimizer, rows = trained()
    digest = table_digest(initial_table(SETTINGS.buckets, 8, SETTINGS.init_std, 7))
    record = pack_table(encoder, rows, digest)
    moments = pack_sparse_adam(optimizer, rows)
    assert record["values"].shape == (len(rows), 8) and len(rows) < SETTINGS.buckets // 10
    assert moments["state"][0]["exp_avg"].shape == (len(rows), 8)
    untouched = torch.ones(SETTINGS.buckets, dtype=torch.bool)
    untouched[rows] = False  # training left these rows at their initialisation
    assert torch.equal(encoder.table.weight[untouched],
                       initial_table(SETTINGS.buckets, 8, SETTINGS.init_std, 7)[untouched])

    rebuilt = NgramEncoder(SETTINGS, dim=8, seed=7)
    unpack_table(rebuilt, record, "test")
    assert torch.equal(rebuilt.table.weight, encoder.table.weight)
    fresh = torch.optim.SparseAdam([rebuilt.table.weight], lr=0.05)
    unpack_sparse_adam(fresh, moments, rows)
    want, got = optimizer.state_dict()["state"][0], fresh.state_dict()["state"][0]
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(torch.as_tensor(got[name]), torch.as_tensor(want[name])), name


def test_a_different_initialisation_is_refused() -> None:
    encoder, _, rows = trained()
    record = pack_table(encoder, rows, "0" * 32)  # not the digest of seed 7's table
    with pytest.raises(CheckpointError, match="regenerated from seed 7 differs"):
        unpack_table(NgramEncoder(SETTINGS, dim=8, seed=7), record, "test")
    good = pack_table(encoder, rows, table_digest(initial_table(4096, 8, 0.5, 7)))
    with pytest.raises(CheckpointError, match="does not fit its settings"):
        unpack_table(NgramEncoder(SETTINGS, dim=8, seed=8), good, "test")
