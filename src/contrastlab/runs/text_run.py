"""Loading a text run (``contrastlab train-text``): its encoder and tokenizer, and sentence
embeddings from them.

The checkpoint is read weights-only (:func:`contrastlab.runs.checkpoint.load_checkpoint`); it
holds the settings the encoder was built with, the tokenizer's JSON (Transformer runs; an n-gram
run's featuriser is rebuilt from its settings and its IDF is a buffer of the state dict; an
``hf:PATH`` run holds the model folder's ``config.json`` and tokenizer files, from which
transformers rebuilds the model and tokenizer, :func:`contrastlab.runs.hf_folder.rebuild_encoder`)
and the state dict (an n-gram table as its trained rows over its regenerated initialisation:
:mod:`contrastlab.runs.ngram_table`; checkpoints of before hold the whole table), so the run
needs nothing else (not the model folder either) to embed sentences exactly as in training (in
eval mode: no dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.ngrams import NgramFeaturizer
from contrastlab.data.tokenizer import TextTokenizer
from contrastlab.errors import CheckpointError
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder, NgramEncoderSettings
from contrastlab.models.text_encoder import TextEncoderSettings, TextTransformer
from contrastlab.runs.checkpoint import load_run_of_kind
from contrastlab.runs.hf_folder import HF_PREFIX, rebuild_encoder
from contrastlab.runs.ngram_table import unpack_table

#: the ``kind`` of a text run's checkpoint (image runs' checkpoints have none)
TEXT_RUN_KIND = "text-simcse"


@dataclass
class LoadedTextRun:
    """A text run's encoder (eval mode, on ``device``) and tokenizer (or n-gram featuriser)."""

    encoder: TextTransformer | NgramEncoder | HfTextEncoder
    tokenizer: TextTokenizer | NgramFeaturizer | HfTokenizer
    device: torch.device

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """(N, D) float32 sentence embeddings on the CPU, in the order of ``texts``."""
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            if isinstance(self.tokenizer, NgramFeaturizer):
                bags = self.tokenizer.encode(chunk).to(self.device)
                parts.append(self.encoder(bags.ids, bags.weights, bags.offsets).float().cpu())
                continue
            assert not isinstance(self.encoder, NgramEncoder)
            tokens = self.tokenizer.encode(chunk, self.encoder.max_length).to(self.device)
            parts.append(self.encoder(tokens.ids, tokens.mask).float().cpu())
        if not parts:
            return torch.zeros(0, self.encoder.output_dim)
        return torch.cat(parts)


def load_text_run(run: str | Path, device: torch.device | str = "cpu") -> LoadedTextRun:
    """The encoder and tokenizer of the text run in folder ``run``.

    Raises:
        CheckpointError: no checkpoint, an unreadable one, or an image run's.
    """
    state = load_run_of_kind(run, TEXT_RUN_KIND, "train-text",
                             "is an image run; this needs a text run (trained by `contrastlab "
                             "train-text`)")
    source = f"the checkpoint of '{run}'"
    settings = TextEncoderSettings.from_mapping(state["settings"]["encoder"], source)
    encoder: TextTransformer | NgramEncoder | HfTextEncoder
    tokenizer: TextTokenizer | NgramFeaturizer | HfTokenizer
    backbone = str(state["settings"].get("train", {}).get("text_backbone", "transformer"))
    if backbone.startswith(HF_PREFIX):
        if "hf_files" not in state:
            raise CheckpointError(f"the checkpoint of '{run}' has no hf_files (the model "
                                  "folder's config and tokenizer); train the run again")
        encoder, tokenizer = rebuild_encoder(state["hf_files"], settings.pool,
                                             settings.max_length, str(run))
    elif backbone == "ngrams":
        ngrams = NgramEncoderSettings.from_mapping(state["settings"].get("ngrams", {}), source)
        table = state.get("ngram_table")
        encoder = NgramEncoder(ngrams, settings.dim, settings.dropout,
                               seed=table["seed"] if table else 0)
        if table:  # the touched rows over the regenerated initialisation
            unpack_table(encoder, table, source)
        tokenizer = NgramFeaturizer(ngrams.buckets, ngrams.char_ngrams, ngrams.word_ngrams)
    else:
        encoder = TextTransformer(int(state["vocab_size"]), settings, int(state["pad_id"]))
        tokenizer = TextTokenizer.from_json(state["tokenizer"])
    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if isinstance(encoder, NgramEncoder) and "ngram_table" in state:
        weights["table.weight"] = encoder.table.weight.detach()
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"the encoder weights of '{run}' do not fit its settings: "
                              f"{str(error).splitlines()[0]}") from None
    device = torch.device(device)
    return LoadedTextRun(encoder.to(device).eval(), tokenizer, device)


__all__ = ["TEXT_RUN_KIND", "LoadedTextRun", "load_text_run"]
