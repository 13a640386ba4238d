"""The settings of an image-text run (``contrastlab train-pairs``): five sections, each declared
beside what it configures, layered as the text runs' (defaults < YAML file < flags).

=============  ==============================================================  =================
section        declared in                                                     examples
=============  ==============================================================  =================
``train``      here (:class:`PairTrainSettings`)                                data, method
``encoder``    :class:`contrastlab.models.text_encoder.TextEncoderSettings`     dim, depth
``method``     :class:`~contrastlab.methods.clip.CLIPSettings` or               temperature, bias
               :class:`~contrastlab.methods.siglip.SigLIPSettings` (by name)
``views``      :class:`PairViewSettings` (the image path's augmentation)        crop_scale
``optimizer``  :class:`contrastlab.optim.settings.OptimizerSettings`            lr
=============  ==============================================================  =================

A YAML file holds flat keys (``dim: 128``) or sections (``encoder: {dim: 128}``); every flat key
is also the ``--flag`` of the command. ``method: clip`` (a name) chooses the method;
``method: {temperature: 0.1}`` (a mapping) is its section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from contrastlab.errors import ConfigError
from contrastlab.methods.image_text import IMAGE_TEXT_METHODS, image_text_settings
from contrastlab.methods.settings import MethodSettings
from contrastlab.models.backbones import check_backbone_name
from contrastlab.models.text_encoder import TextEncoderSettings
from contrastlab.optim.settings import OptimizerSettings
from contrastlab.runs.hf_folder import HF_PREFIX
from contrastlab.settings import Settings, setting
from contrastlab.training.text_settings import SectionTable, layer_settings
from contrastlab.views.settings import AugmentConfig

_PROBABILITY = {"ge": 0, "le": 1, "note": "is a probability and "}


@dataclass
class PairTrainSettings(Settings):
    """What an image-text run trains on, which method, for how long and where it writes."""

    section: ClassVar[str] = "train"

    data: str = setting("", "Image-caption pairs: a folder of images with a .txt caption "
                        "beside each, a .csv/.tsv/.jsonl of path,caption, or .tar shards with "
                        ".jpg + .txt members (docs/text.md).", source="here")
    method: str = setting("clip", "clip (softmax over the batch) or siglip (pairwise sigmoid).",
                          source="here", choices=tuple(IMAGE_TEXT_METHODS))
    text_backbone: str = setting(
        "transformer", "The text tower: transformer (a new Transformer: the encoder section, "
        "a tokenizer trained or given) or hf:PATH (a local Hugging Face model folder: its "
        "pretrained weights and its tokenizer; pool and max_length of the encoder section).",
        source="here", must_be="transformer or hf:PATH")
    lock_text: bool = setting(
        False, "Locked text tower: keep the hf:PATH text tower's pretrained weights fixed (eval "
        "mode, no dropout) and train the image tower, both projections and the loss's "
        "temperature (and bias); LiT (Zhai et al. 2022) locks the image tower instead.",
        source="here, after LiT (locked-image tuning)")
    backbone: str = setting("convnet", "The image tower: a backbone of the registry "
                            "(`contrastlab train --help` lists them).", source="here")
    image_size: int | None = setting(
        None, "Resize (shorter side) and centre-crop every image to this square; none: the "
        "images' own size (all must have one).", source="here", ge=4)
    tokenizer: str | None = setting(
        None, "A tokenizer.json (or a folder holding one); none: train a WordPiece tokenizer "
        "of vocab_size on the captions.", source="here")
    vocab_size: int = setting(8000, "Vocabulary of the tokenizer trained when none is given.",
                              source="here", ge=16)
    out: str = setting("", "Run directory (default runs/<method>-<data>-<time>).",
                       source="here")
    epochs: int = setting(1, "Passes over the pairs (ignored with time_budget).",
                          source="here", ge=1)
    batch_size: int = setting(128, "Pairs per step (each pair's negatives are the others).",
                              source="here: CLIP used 32,768, a CPU cannot", ge=2)
    time_budget: float | None = setting(
        None, "Stop after this many seconds of training; the schedule spans the budget.",
        source="here", gt=0)
    seed: int = setting(0, "Seed of initialisation, augmentations and batch order.",
                        source="here")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", source="here")
    log_every: int = setting(20, "Write a step record to metrics.jsonl every N steps.",
                             source="here", ge=1)
    skip_bad_files: bool = setting(False, "Leave bad rows and unreadable images out (counted) "
                                   "instead of stopping at the first.", source="here")
    stream: str = setting(
        "auto", "Stream pairs from tar shards (image and .txt read in worker processes) instead "
        "of decoding them into memory first: auto or on (shards stream), off (in memory). "
        "Caption folders and tables are read into memory.", source="here: as train's --stream",
        choices=("auto", "on", "off"))
    loader_workers: int | None = setting(
        None, "Worker processes reading streamed batches (0: in the training process); none: "
        "the CPU count less one, at most 8. The batches do not depend on it.", source="here",
        ge=0)
    shuffle_buffer: int = setting(
        10_000, "Samples in the streamed shuffle buffer (sample numbers only); the shard order "
        "is shuffled per epoch as well.", source="here: as train's", ge=0)
    threads: int | None = setting(None, "CPU threads of torch (none: torch's default).",
                                  source="here", ge=1)
    resume: bool = setting(False, "Continue the run in --out from its last checkpoint (its own "
                           "settings; only how long it runs and the machinery may change).",
                           source="here")
    checkpoint_every: int = setting(
        0, "Also write the checkpoint every N steps within an epoch (0: at the end of each "
        "epoch); a killed run then loses at most N steps.", source="here", ge=0)

    def check_together(self) -> None:
        check_backbone_name(self.backbone)
        text = self.text_backbone
        if text.startswith(HF_PREFIX):
            if not text[len(HF_PREFIX):].strip():
                raise ConfigError("text_backbone 'hf:' names no folder: give --text-backbone "
                                  "hf:PATH, PATH a local Hugging Face model folder")
            if self.tokenizer:
                raise ConfigError(f"tokenizer '{self.tokenizer}' cannot be given with "
                                  f"text_backbone {text}: the model folder's own tokenizer is "
                                  "used; leave --tokenizer out")
        elif text != "transformer":
            raise ConfigError(f"unknown text_backbone '{text}' for train-pairs: choose "
                              f"transformer or {HF_PREFIX}PATH (a local Hugging Face model "
                              "folder)")
        elif self.lock_text:
            raise ConfigError("lock_text freezes a pretrained text tower, but text_backbone "
                              "transformer is a new, random one: give --text-backbone hf:PATH "
                              "with --lock-text, or leave --lock-text out")


@dataclass
class PairViewSettings(AugmentConfig):
    """The image augmentation of an image-text run: the image path's pipeline
    (:class:`~contrastlab.views.settings.AugmentConfig`) with CLIP's choice as defaults: a
    random crop (and a flip), no colour changes, since a caption may name the colours."""

    crop_scale: tuple[float, float] = setting(
        (0.5, 1.0), "Random resized crop: area range (min, max) of the crop.",
        source="CLIP: a random square crop is its only augmentation; here: area 0.5-1",
        gt=0, le=1, ordered=True, must_be="two numbers with 0 < min <= max <= 1")
    jitter_p: float = setting(0.0, "Probability of colour jitter.", source="CLIP (none)",
                              **_PROBABILITY)
    grey_p: float = setting(0.0, "Probability of greyscale.", source="CLIP (none)",
                            **_PROBABILITY)
    blur_p: float = setting(0.0, "Probability of Gaussian blur (views >= blur_min_size only).",
                            source="CLIP (none)", **_PROBABILITY)


#: the method section offers CLIP's and SigLIP's fields; the run keeps those of its method
PAIR_SECTIONS: SectionTable = {
    "train": PairTrainSettings,
    "encoder": TextEncoderSettings,
    "method": tuple(m.Settings for m in IMAGE_TEXT_METHODS.values()),
    "views": PairViewSettings,
    "optimizer": OptimizerSettings,
}


@dataclass
class PairRunSettings:
    """Every section of an image-text run."""

    train: PairTrainSettings
    encoder: TextEncoderSettings
    method: MethodSettings
    views: PairViewSettings
    optimizer: OptimizerSettings

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested ``{section: {name: value}}`` (the run's ``config.yaml``)."""
        return {name: getattr(self, name).to_dict() for name in PAIR_SECTIONS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Mapping[str, Any]],
                  source: str = "configuration") -> PairRunSettings:
        train = PairTrainSettings.from_mapping(values.get("train", {}), source)
        method_values = dict(values.get("method", {}))
        method_class = IMAGE_TEXT_METHODS[train.method].Settings
        other = sorted(set(method_values) - {f for f in method_class.__dataclass_fields__})
        if other:
            raise ConfigError(f"{', '.join(other)}: not a setting of method '{train.method}'"
                              + (" (bias is SigLIP's)" if other == ["bias"] else ""))
        return cls(train=train,
                   encoder=TextEncoderSettings.from_mapping(values.get("encoder", {}), source),
                   method=image_text_settings(train.method, method_values, source),
                   views=PairViewSettings.from_mapping(values.get("views", {}), source),
                   optimizer=OptimizerSettings.from_mapping(values.get("optimizer", {}), source))


def resolve_pair_settings(flags: Mapping[str, Any] | None = None,
                          config_file: str | Path | None = None,
                          recipe: Mapping[str, Any] | None = None,
                          recipe_name: str | None = None) -> PairRunSettings:
    """Defaults < ``recipe`` < ``config_file`` < ``flags`` (flat keys; None means "not given");
    with ``resume``, the run in ``out`` gives the base settings
    (:func:`contrastlab.training.small_resume.resumed_settings`).

    Raises:
        ConfigError: an unknown key or a bad value, naming the layer it came from; no data.
        CheckpointError: ``resume`` without a resumable run, or with a setting it forbids.
    """
    from contrastlab.runs.pair_run import PAIR_RUN_KIND
    from contrastlab.training.small_resume import new_or_resumed_settings

    merged = layer_settings(PAIR_SECTIONS, flags, config_file, recipe, recipe_name)
    return new_or_resumed_settings(
        PAIR_SECTIONS, merged, PairRunSettings.from_dict, PAIR_RUN_KIND, "train-pairs",
        "give --data PAIRS (a folder of images with .txt captions, a .csv/.jsonl of "
        "path,caption, or shards)")


__all__ = ["PAIR_SECTIONS", "PairRunSettings", "PairTrainSettings",
           "PairViewSettings", "resolve_pair_settings"]
