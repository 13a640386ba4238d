"""The text encoder: padding does not change a sentence's embedding, dropout is the only
randomness, and the ViT still builds from the shared blocks."""

from __future__ import annotations

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.models.text_encoder import TextEncoderSettings, TextTransformer


@pytest.mark.parametrize("pool,final_norm", [("mean", True), ("cls", True), ("mean", False)])
def test_padding_leaves_the_embedding_unchanged(pool: str, final_norm: bool) -> None:
    torch.manual_seed(0)
    encoder = TextTransformer(50, TextEncoderSettings(dim=16, depth=2, heads=2, max_length=12,
                                                      pool=pool, final_norm=final_norm)).eval()
    check_padding(encoder)


def test_without_positions_depth_0_is_a_bag_of_tokens() -> None:
    torch.manual_seed(0)
    encoder = TextTransformer(50, TextEncoderSettings(dim=16, depth=0, heads=2, positions=False,
                                                      final_norm=False)).eval()
    check_padding(encoder)
    ids = torch.tensor([[2, 7, 9, 3], [2, 9, 7, 3]])
    out = encoder(ids, torch.ones_like(ids, dtype=torch.bool))
    torch.testing.assert_close(out[0], out[1])  # word order does not matter
    expected = encoder.token_embed(ids[0]).mean(dim=0)
    torch.testing.assert_close(out[0], expected)


def check_padding(encoder: TextTransformer) -> None:
    ids = torch.tensor([[2, 7, 9, 3]])
    alone = encoder(ids, torch.ones_like(ids, dtype=torch.bool))
    padded_ids = torch.tensor([[2, 7, 9, 3, 0, 0, 0], [2, 5, 6, 8, 11, 4, 3]])
    mask = padded_ids != 0
    padded = encoder(padded_ids, mask)
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)


def test_dropout_makes_two_passes_differ_only_in_training() -> None:
    torch.manual_seed(1)
    encoder = TextTransformer(30, TextEncoderSettings(dim=16, depth=1, heads=2, dropout=0.3))
    ids = torch.randint(5, 30, (4, 6))
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert not torch.allclose(encoder(ids, mask), encoder(ids, mask))
    encoder.eval()
    torch.testing.assert_close(encoder(ids, mask), encoder(ids, mask))


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="heads 3 must divide dim 16"):
        TextEncoderSettings(dim=16, heads=3)
    with pytest.raises(ConfigError, match="pool"):
        TextEncoderSettings(pool="max")
    encoder = TextTransformer(30, TextEncoderSettings(dim=8, heads=2, max_length=4))
    with pytest.raises(ValueError, match="at most 4"):
        encoder(torch.ones(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))


def test_token_drop_keeps_cls_sep_and_at_least_one_word() -> None:
    from contrastlab.methods.simcse import drop_tokens

    torch.manual_seed(0)
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 3 + [False] * 5] * 50)
    dropped = drop_tokens(mask, 0.9)
    lengths = mask.sum(dim=1)
    rows = torch.arange(len(mask))
    assert dropped[:, 0].all() and dropped[rows, lengths - 1].all()
    assert not (dropped & ~mask).any()  # padding stays out
    assert (dropped[:, 1:].sum(dim=1) >= 2).all()  # [SEP] and at least one word
    assert dropped.sum() < mask.sum()
    torch.testing.assert_close(drop_tokens(mask, 0.0), mask)
