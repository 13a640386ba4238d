"""Tokenizers trained here (nothing downloaded), saved and loaded; ids padded and cut."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastlab.data.tokenizer import TextTokenizer, train_tokenizer
from contrastlab.errors import ConfigError, DataError

CORPUS = ["a man is playing a guitar .", "a woman is slicing an onion .",
          "two dogs run in the park .", "the cat sleeps on the sofa ."] * 5


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_train_save_load_round_trip(tmp_path: Path, kind: str) -> None:
    tokenizer = train_tokenizer(CORPUS, vocab_size=120, kind=kind, min_frequency=1)
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_json())
    loaded = TextTokenizer.from_file(path)
    assert TextTokenizer.from_file(tmp_path).vocab_size == loaded.vocab_size  # a folder
    batch = loaded.encode(["A man is playing a guitar.", "two dogs"], max_length=32)
    assert torch.equal(batch.ids, tokenizer.encode(["A man is playing a guitar.", "two dogs"],
                                                   32).ids)
    cls_id = loaded.tokenizer.token_to_id("[CLS]")
    sep_id = loaded.tokenizer.token_to_id("[SEP]")
    assert batch.ids[0, 0] == cls_id and batch.ids[1, 0] == cls_id
    lengths = batch.mask.sum(dim=1)
    assert lengths[0] > lengths[1]
    assert batch.ids[1, lengths[1] - 1] == sep_id
    assert (batch.ids[1, lengths[1]:] == loaded.pad_id).all()


def test_truncation_keeps_the_final_separator() -> None:
    tokenizer = train_tokenizer(CORPUS, vocab_size=120, min_frequency=1)
    batch = tokenizer.encode(["a man is playing a guitar in the park ."], max_length=4)
    assert batch.ids.shape == (1, 4)
    assert batch.ids[0, -1] == tokenizer.tokenizer.token_to_id("[SEP]")


def test_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*tokenizer train"):
        TextTokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a tokenizers JSON"):
        TextTokenizer.from_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="kind"):
        train_tokenizer(CORPUS, kind="unigram-lm")
