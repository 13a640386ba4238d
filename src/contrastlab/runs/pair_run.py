"""Loading an image-text run (``contrastlab train-pairs``): both towers, the tokenizer and the
image normalisation, and embeddings in the shared space.

The checkpoint (read weights-only) holds the run's settings, the image geometry and
normalisation (mean, std of the training images), the tokenizer's JSON (an ``hf:PATH`` text
tower: the model folder's ``config.json`` and tokenizer files, from which transformers rebuilds
the model and tokenizer, :func:`contrastlab.runs.hf_folder.rebuild_encoder`) and the method's
state dict, so the run needs nothing else (not the model folder either): images go through the
evaluation transform (resize to the run's size, normalise) and the image tower, captions through
the tokenizer and the text tower, each followed by its projection; both in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.tokenizer import TextTokenizer
from contrastlab.errors import CheckpointError
from contrastlab.methods.image_text import build_image_text_method, image_text_settings
from contrastlab.methods.two_tower import TwoTowerMethod
from contrastlab.models.backbones import build_backbone, takes_geometry
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.text_encoder import TextEncoderSettings, TextTransformer
from contrastlab.runs.checkpoint import load_run_of_kind
from contrastlab.runs.hf_folder import HF_PREFIX, rebuild_encoder
from contrastlab.views import EvalTransform

#: the ``kind`` of an image-text run's checkpoint
PAIR_RUN_KIND = "image-text"


@dataclass
class LoadedPairRun:
    """An image-text run's method (eval mode, on ``device``), tokenizer and image transform."""

    method: TwoTowerMethod
    tokenizer: TextTokenizer | HfTokenizer
    transform: EvalTransform
    device: torch.device
    max_length: int

    @torch.no_grad()
    def embed_images(self, images: Tensor, batch_size: int = 512,
                     features: bool = False) -> Tensor:
        """(N, D) float32 L2-normalised image embeddings in the shared space of uint8 images
        (N, C, H, W), on the CPU; ``features``: the image tower's features before the
        projection (not normalised), for kNN and linear probes."""
        parts = []
        for start in range(0, images.shape[0], batch_size):
            x = self.transform(images[start:start + batch_size].to(self.device))
            out = self.method.backbone(x) if features else self.method.embed_a(x)
            parts.append(out.float().cpu())
        out = torch.cat(parts) if parts else torch.zeros(0, self.method.projection_a.out_features)
        return out if features else F.normalize(out, dim=1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 512) -> Tensor:
        """(N, D) float32 L2-normalised text embeddings in the shared space, on the CPU."""
        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer.encode(texts[start:start + batch_size], self.max_length)
            parts.append(self.method.embed_b(tokens.to(self.device)).float().cpu())
        if not parts:
            return torch.zeros(0, self.method.projection_b.out_features)
        return F.normalize(torch.cat(parts), dim=1)


def load_pair_run(run: str | Path, device: torch.device | str = "cpu") -> LoadedPairRun:
    """The towers, tokenizer and image transform of the image-text run in folder ``run``.

    Raises:
        CheckpointError: no checkpoint, an unreadable one, or another kind of run's.
    """
    state = load_run_of_kind(run, PAIR_RUN_KIND, "train-pairs",
                             "is not an image-text run (trained by `contrastlab train-pairs`); "
                             "zero-shot and retrieval need one")
    source = f"the checkpoint of '{run}'"
    settings: dict[str, Any] = state["settings"]
    image = state["image"]
    backbone_name = settings["train"]["backbone"]
    geometry = image["size"] if takes_geometry(backbone_name) else None
    backbone = build_backbone(backbone_name, image["channels"], geometry)
    encoder = TextEncoderSettings.from_mapping(settings["encoder"], source)
    text: TextTransformer | HfTextEncoder
    tokenizer: TextTokenizer | HfTokenizer
    text_backbone = str(settings["train"].get("text_backbone", "transformer"))
    if text_backbone.startswith(HF_PREFIX):
        if "hf_files" not in state:
            raise CheckpointError(f"the checkpoint of '{run}' has no hf_files (the model "
                                  "folder's config and tokenizer); train the run again")
        text, tokenizer = rebuild_encoder(state["hf_files"], encoder.pool, encoder.max_length,
                                          str(run))
    else:
        text = TextTransformer(int(state["vocab_size"]), encoder, int(state["pad_id"]))
        tokenizer = TextTokenizer.from_json(state["tokenizer"])
    method_name = settings["train"]["method"]
    method = build_image_text_method(method_name, backbone, text,
                                     image_text_settings(method_name, settings["method"], source),
                                     lock_text=bool(settings["train"].get("lock_text", False)))
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"the weights of '{run}' do not fit its settings: "
                              f"{str(error).splitlines()[0]}") from None
    device = torch.device(device)
    transform = EvalTransform(image["size"], image["channels"], image["mean"], image["std"])
    return LoadedPairRun(method.to(device).eval(), tokenizer, transform, device,
                         text.max_length)


__all__ = ["PAIR_RUN_KIND", "LoadedPairRun", "load_pair_run"]
