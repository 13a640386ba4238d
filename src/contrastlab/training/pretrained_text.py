"""A pretrained text encoder from a local Hugging Face model folder: the sentence encoder of a
text run (``train-text --text-backbone hf:PATH``) or the text tower of an image-text run
(``train-pairs --text-backbone hf:PATH``).

A new run reads the local Hugging Face model folder once (:func:`contrastlab.runs.hf_folder.
load_folder`: pretrained weights, its tokenizer, local files only); its checkpoint then holds
the folder's ``config.json`` and tokenizer files (``hf_files``) and where they came from
(``hf_source``) beside the weights, so a resumed run (and :func:`contrastlab.runs.pair_run.
load_pair_run`) rebuilds the tower from the checkpoint alone
(:func:`~contrastlab.runs.hf_folder.rebuild_encoder`) without reading the folder again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.errors import CheckpointError
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.text_encoder import TextEncoderSettings
from contrastlab.runs.hf_folder import folder_files, load_folder, rebuild_encoder


@dataclass
class PretrainedText:
    """An ``hf:PATH`` tower's encoder and tokenizer, the folder's files the checkpoint keeps
    and where they came from."""

    encoder: HfTextEncoder
    tokenizer: HfTokenizer
    files: dict[str, Tensor]
    source: dict[str, Any]

    def checkpoint_entries(self) -> dict[str, Any]:
        """What the run's checkpoint holds for the tower besides its weights."""
        return {"hf_files": self.files, "hf_source": self.source}


def pretrained_text_tower(folder: Path, encoder: TextEncoderSettings,
                          saved: dict[str, Any] | None, out: Path,
                          say: Callable[[str], None], role: str = "") -> PretrainedText:
    """The pretrained tower of the model ``folder`` (a new run), or the one rebuilt from the
    checkpoint ``saved`` of the run in ``out`` (a resumed run: the trainer then loads its
    weights; the folder is not read). ``encoder``: its ``pool`` and ``max_length`` apply;
    ``role`` (e.g. " as the text tower") goes into the message.

    Raises:
        ConfigError: the folder is missing or not a model folder transformers can load.
        CheckpointError: the resumed checkpoint lacks the folder's files.
    """
    if saved is not None:
        if "hf_files" not in saved:
            raise CheckpointError(f"cannot resume '{out}': its checkpoint has no hf_files (the "
                                  "model folder's config and tokenizer); start a new run")
        model, tokenizer = rebuild_encoder(saved["hf_files"], encoder.pool, encoder.max_length,
                                           str(out))
        return PretrainedText(model.train(), tokenizer, dict(saved["hf_files"]),
                              dict(saved.get("hf_source", {})))
    model, tokenizer, source = load_folder(folder, encoder.pool, encoder.max_length)
    say(f"loaded {source['model_type']} from {source['path']}{role} "
        f"({model.output_dim}-d, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
        "parameters)")
    return PretrainedText(model, tokenizer, folder_files(model, tokenizer), source)


__all__ = ["PretrainedText", "pretrained_text_tower"]
