"""Sub-word tokenisation with Hugging Face ``tokenizers``: train one on a corpus, load a local
``tokenizer.json``, turn sentences into padded id tensors.

A trained tokenizer is BERT-like (Devlin et al. 2019): Unicode normalisation, lower case and
accents stripped, split on white space and punctuation, then WordPiece (Wu et al. 2016;
``kind="wordpiece"``) or byte-pair encoding (Sennrich et al. 2016; ``kind="bpe"``) sub-words,
and every sentence wrapped as ``[CLS] tokens [SEP]``. Any ``tokenizer.json`` of the library loads
(a Hugging Face model folder's included); padding uses its ``[PAD]`` (or ``<pad>``) token, id 0
when it has none. Nothing is downloaded: the library is only given local files.

``tokenizers`` is imported when a tokenizer is trained or loaded (the ``text`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlab.errors import ConfigError, DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
KINDS = ("wordpiece", "bpe")
PAD_NAMES = ("[PAD]", "<pad>")


def _library() -> Any:
    try:
        import tokenizers
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        raise ConfigError("text needs the 'tokenizers' package: pip install "
                          "'contrastlab[text]'") from error
    return tokenizers


@dataclass
class TokenBatch:
    """Token ids (N, L) of sentences padded to the longest one (at most ``max_length``), and
    the mask (N, L) of real tokens (True) against padding (False)."""

    ids: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.ids.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.ids.shape[0]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the padding and truncation contrastlab uses."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.pad_id = next((vocab[name] for name in PAD_NAMES if name in vocab), 0)
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Load a ``tokenizer.json`` (or the one inside a model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise DataError(f"tokenizer '{path}' does not exist: train one with `contrastlab "
                            "tokenizer train --data SENTENCES --out tokenizer.json`")
        try:
            tokenizer = _library().Tokenizer.from_file(str(path))
        except Exception as error:  # noqa: BLE001 - the library raises plain Exceptions
            raise DataError(f"'{path}' is not a tokenizers JSON file ({error})") from None
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> TextTokenizer:
        """Load from the JSON text a run stores."""
        return cls(_library().Tokenizer.from_str(text))

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def encode(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        """Ids and mask of ``texts``, each cut to ``max_length`` tokens (the final ``[SEP]``
        kept), padded to the longest."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        rows = [_truncate(e.ids, max_length) for e in encodings]
        length = max(1, max((len(r) for r in rows), default=1))
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = True
        mask[:, 0] |= ~mask.any(dim=1)  # an empty text still has one (pad) position to pool
        return TokenBatch(ids, mask)


def _truncate(ids: list[int], max_length: int) -> list[int]:
    return ids if len(ids) <= max_length else [*ids[:max_length - 1], ids[-1]]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, kind: str = "wordpiece",
                    min_frequency: int = 2) -> TextTokenizer:
    """A BERT-like tokenizer (see the module docstring) trained on ``texts``."""
    if kind not in KINDS:
        raise ConfigError(f"tokenizer kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
    lib = _library()
    models, trainers = lib.models, lib.trainers
    if kind == "wordpiece":
        tokenizer = lib.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS),
                                            show_progress=False)
        tokenizer.decoder = lib.decoders.WordPiece()
    else:
        tokenizer = lib.Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.normalizer = lib.normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = lib.pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = lib.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return TextTokenizer(tokenizer)


__all__ = ["KINDS", "TextTokenizer", "TokenBatch", "train_tokenizer"]
