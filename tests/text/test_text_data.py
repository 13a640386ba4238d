"""What a text run trains on: unique sentences (unsupervised), scored pairs above the threshold
(supervised), batches cut to their longest sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastlab.errors import DataError
from contrastlab.methods.simcse import SimCSESettings
from contrastlab.training.text_data import build_training_data, read_training_texts
from contrastlab.training.text_settings import TextTrainSettings


def test_unsupervised_reads_every_sentence_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\none\n")
    (tmp_path / "b.tsv").write_text("two\tthree\t1.0\n")
    train = TextTrainSettings(data=f"{tmp_path / 'a.txt'},{tmp_path / 'b.tsv'}")
    groups, skipped = read_training_texts(train, SimCSESettings())
    assert groups == [["one", "two", "three"]] and skipped == []


def test_supervised_keeps_pairs_scored_at_least_the_threshold(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("a\tb\t4.5\nc\td\t3.9\ne\tf\t4.0\nbad row\n")
    train = TextTrainSettings(data=str(tmp_path / "p.tsv"), skip_bad_files=True)
    groups, skipped = read_training_texts(train, SimCSESettings(supervised=True))
    assert groups == [["a", "e"], ["b", "f"]] and len(skipped) == 1
    with pytest.raises(DataError, match="1 positive pair"):
        read_training_texts(train, SimCSESettings(supervised=True, positive_threshold=4.2))


def test_batches_are_cut_to_their_longest_sentence(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("a b c d e f g h\na b\nc d\ne f\n")
    data = build_training_data(TextTrainSettings(data=str(tmp_path / "s.txt"), vocab_size=40),
                               SimCSESettings(), max_length=16)
    assert len(data) == 4 and data.groups == 1
    short = data.batch(torch.tensor([1, 2]))
    assert short.tokens.ids.shape == (2, 4)  # [CLS] w w [SEP]
    assert data.batch(torch.tensor([0, 1])).tokens.ids.shape[1] > 4
