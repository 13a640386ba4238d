"""The settings of a text run (``contrastlab train-text``): five sections, each declared beside
what it configures, layered like the image runs' (defaults < recipe < YAML file < flags).

=============  ============================================================  ====================
section        declared in                                                   examples
=============  ============================================================  ====================
``train``      here (:class:`TextTrainSettings`)                              data, epochs, out
``encoder``    :class:`contrastlab.models.text_encoder.TextEncoderSettings`    dim, depth, dropout
``ngrams``     :class:`contrastlab.models.ngram_encoder.NgramEncoderSettings`  buckets, char_ngrams
``method``     :class:`contrastlab.methods.simcse.SimCSESettings`             temperature
``optimizer``  :class:`contrastlab.optim.settings.OptimizerSettings`          lr, warmup_fraction
=============  ============================================================  ====================

A YAML file (or recipe) holds flat keys (``dim: 256``) or sections (``encoder: {dim: 256}``);
every flat key is also the ``--flag`` of the command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from contrastlab.errors import ConfigError, did_you_mean
from contrastlab.methods.simcse import SimCSESettings
from contrastlab.models.ngram_encoder import NgramEncoderSettings
from contrastlab.models.text_encoder import TextEncoderSettings
from contrastlab.optim.settings import OptimizerSettings
from contrastlab.runs.hf_folder import HF_PREFIX
from contrastlab.settings import Declaration, Settings, declarations, setting


@dataclass
class TextTrainSettings(Settings):
    """What a text run trains on, for how long and where it writes."""

    section: ClassVar[str] = "train"

    text_backbone: str = setting(
        "transformer", "The sentence encoder: transformer (sub-word tokens, the encoder section), "
        "ngrams (a bag of hashed character and word n-grams, the ngrams section; dim and "
        "dropout of the encoder section) or hf:PATH (a local Hugging Face model folder and its "
        "tokenizer; pool and max_length of the encoder section, the model's own dropout).",
        source="here", must_be="transformer, ngrams or hf:PATH")
    data: str = setting("", "Training text: files of sentences (.txt, .txt.gz) or of pairs "
                        "(.tsv, .csv, .jsonl), comma-separated (docs/text.md).", source="here")
    tokenizer: str | None = setting(
        None, "A tokenizer.json (or a folder holding one); none: train a WordPiece tokenizer of "
        "vocab_size on the training sentences.", source="here")
    vocab_size: int = setting(8000, "Vocabulary of the tokenizer trained when none is given.",
                              source="here: STS-B's 14k sentences", ge=16)
    out: str = setting("", "Run directory (default runs/simcse-<data>-<time>).", source="here")
    epochs: int = setting(1, "Passes over the training sentences (ignored with time_budget); "
                          "0: no step, the run holds the encoder as initialised (hf: the "
                          "pretrained model as it is).",
                          source="SimCSE: 1 epoch of its 10^6 sentences", ge=0)
    batch_size: int = setting(64, "Sentences (anchors) per step.",
                              source="SimCSE's unsupervised batch", ge=2)
    time_budget: float | None = setting(
        None, "Stop after this many seconds of training; the schedule spans the budget.",
        source="here", gt=0)
    seed: int = setting(0, "Seed of initialisation, dropout and batch order.", source="here")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", source="here")
    log_every: int = setting(20, "Write a step record to metrics.jsonl every N steps.",
                             source="here", ge=1)
    skip_bad_files: bool = setting(False, "Leave bad rows of the data out (counted) instead of "
                                   "stopping at the first.", source="here")
    threads: int | None = setting(None, "CPU threads of torch (none: torch's default).",
                                  source="here", ge=1)
    resume: bool = setting(False, "Continue the run in --out from its last checkpoint (its own "
                           "settings; only how long it runs and the machinery may change).",
                           source="here")
    checkpoint_every: int = setting(
        0, "Also write the checkpoint every N steps within an epoch (0: at the end of each "
        "epoch); a killed run then loses at most N steps.", source="here", ge=0)

    def check_together(self) -> None:
        if self.data and not data_paths(self.data):
            raise ConfigError("data names no file")
        backbone = self.text_backbone
        if backbone.startswith(HF_PREFIX):
            if not backbone[len(HF_PREFIX):].strip():
                raise ConfigError("text_backbone 'hf:' names no folder: give --text-backbone "
                                  "hf:PATH, PATH a local Hugging Face model folder")
            if self.tokenizer:
                raise ConfigError(f"tokenizer '{self.tokenizer}' cannot be given with "
                                  f"text_backbone {backbone}: the model folder's own tokenizer "
                                  "is used; leave --tokenizer out")
        elif backbone not in TEXT_BACKBONES:
            raise ConfigError(f"unknown text_backbone '{backbone}'."
                              f"{did_you_mean(backbone, TEXT_BACKBONES)} Choose one of "
                              f"{', '.join(TEXT_BACKBONES)} or {HF_PREFIX}PATH (a local Hugging "
                              "Face model folder)")


#: the built-in text backbones (besides ``hf:PATH``)
TEXT_BACKBONES = ("transformer", "ngrams")


def data_paths(data: str) -> list[Path]:
    """The files of a comma-separated ``data`` setting."""
    return [Path(part.strip()) for part in data.split(",") if part.strip()]


TEXT_SECTIONS: dict[str, type[Settings]] = {
    "train": TextTrainSettings,
    "encoder": TextEncoderSettings,
    "ngrams": NgramEncoderSettings,
    "method": SimCSESettings,
    "optimizer": OptimizerSettings,
}


@dataclass
class TextRunSettings:
    """Every section of a text run."""

    train: TextTrainSettings
    encoder: TextEncoderSettings
    ngrams: NgramEncoderSettings
    method: SimCSESettings
    optimizer: OptimizerSettings

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested ``{section: {name: value}}`` (the run's ``config.yaml``)."""
        return {name: getattr(self, name).to_dict() for name in TEXT_SECTIONS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Mapping[str, Any]]) -> TextRunSettings:
        return cls(**{name: TEXT_SECTIONS[name].from_mapping(values.get(name, {}))
                      for name in TEXT_SECTIONS})


#: sections of a run: a settings class, or several whose fields are offered together (the
#: ``method`` section of an image-text run: CLIP's or SigLIP's, chosen by name)
SectionTable = Mapping[str, type[Settings] | tuple[type[Settings], ...]]


def section_declarations(entry: type[Settings] | tuple[type[Settings], ...]
                         ) -> list[Declaration]:
    """The declarations of a section's class (or classes: each flat key once, first wins)."""
    found: dict[str, Declaration] = {}
    for settings_class in entry if isinstance(entry, tuple) else (entry,):
        for declaration in declarations(settings_class):
            found.setdefault(declaration.key, declaration)
    return list(found.values())


def flat_keys(sections: SectionTable | None = None) -> dict[str, tuple[str, str]]:
    """``{flat key: (section, field name)}`` over every section (the text run's by default)."""
    keys = {}
    for section, entry in (sections or TEXT_SECTIONS).items():
        for declaration in section_declarations(entry):
            if declaration.key in keys:  # pragma: no cover - a declaration mistake
                raise RuntimeError(f"flat key '{declaration.key}' declared twice")
            keys[declaration.key] = (section, declaration.name)
    return keys


def _sectioned(values: Mapping[str, Any], source: str, sections: SectionTable
               ) -> dict[str, dict[str, Any]]:
    """Flat or nested values as ``{section: {field name: value}}``; unknown keys are refused
    naming ``source`` and the closest known key."""
    keys = flat_keys(sections)
    found: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key in sections and isinstance(value, Mapping):
            declared = section_declarations(sections[key])
            fields = {d.name for d in declared}
            by_key = {d.key: d.name for d in declared}
            for inner, inner_value in value.items():
                inner = str(inner).replace("-", "_")
                name = by_key.get(inner, inner)
                if name not in fields:
                    hint = did_you_mean(inner, sorted(fields | set(by_key)), cutoff=0.5)
                    raise ConfigError(f"unknown key '{inner}' of {key} in {source}.{hint}")
                found[key][name] = inner_value
        elif key in keys:
            section, name = keys[key]
            found[section][name] = value
        else:
            raise ConfigError(f"unknown key '{key}' in {source}."
                              f"{did_you_mean(key, list(keys) + list(sections), 0.5)}")
    return found


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of text-run settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' is not valid UTF-8 YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of key: value")
    return values


def layer_settings(sections: SectionTable, flags: Mapping[str, Any] | None = None,
                   config_file: str | Path | None = None,
                   recipe: Mapping[str, Any] | None = None,
                   recipe_name: str | None = None) -> dict[str, dict[str, Any]]:
    """``{section: {field name: value}}`` of defaults < ``recipe`` < ``config_file`` <
    ``flags`` (flat keys; None means "not given"); only the values given, not the defaults."""
    layers: list[tuple[Mapping[str, Any], str]] = []
    if recipe is not None:
        layers.append((recipe, f"recipe '{recipe_name}'"))
    if config_file is not None:
        layers.append((read_yaml(config_file), f"config file '{config_file}'"))
    layers.append(({k: v for k, v in (flags or {}).items() if v is not None}, "the options"))
    merged: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for values, source in layers:
        for section, fields in _sectioned(values, source, sections).items():
            merged[section].update(fields)
    return merged


def resolve_text_settings(flags: Mapping[str, Any] | None = None,
                          config_file: str | Path | None = None,
                          recipe: Mapping[str, Any] | None = None,
                          recipe_name: str | None = None) -> TextRunSettings:
    """Defaults < ``recipe`` < ``config_file`` < ``flags`` (flat keys; None means "not given");
    with ``resume``, the run in ``out`` gives the base settings instead of the defaults and the
    others may not change what makes it that run
    (:func:`contrastlab.training.small_resume.resumed_settings`).

    Raises:
        ConfigError: an unknown key or a bad value, naming the layer it came from.
        CheckpointError: ``resume`` without a resumable run, or with a setting it forbids.
    """
    from contrastlab.runs.text_run import TEXT_RUN_KIND
    from contrastlab.training.small_resume import new_or_resumed_settings

    merged = layer_settings(TEXT_SECTIONS, flags, config_file, recipe, recipe_name)
    return new_or_resumed_settings(
        TEXT_SECTIONS, merged, TextRunSettings.from_dict, TEXT_RUN_KIND, "train-text",
        "give --data FILE (sentences .txt or pairs .tsv/.csv/.jsonl)")


__all__ = ["TEXT_BACKBONES", "TEXT_SECTIONS", "SectionTable", "TextRunSettings",
           "TextTrainSettings", "data_paths", "flat_keys", "layer_settings", "read_yaml",
           "resolve_text_settings", "section_declarations"]
