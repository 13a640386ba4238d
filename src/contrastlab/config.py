"""The configuration of a training run: sections of typed settings, checked before any data is read.

A :class:`TrainConfig` nests one group of settings per stage, each declared where it is used::

    data       contrastlab.data.settings.DataSettings        where the images come from, the split
    views      contrastlab.views.settings.ViewSettings       augmentations, multi-crop
    backbone   contrastlab.models.settings.BackboneSettings  which encoder
    method     the method's own settings (methods/<name>.py) the method and its hyper-parameters
    optimizer  contrastlab.optim.settings.OptimizerSettings  optimiser, learning rate, warm-up
    schedule   ScheduleSettings (here)                        epochs, batch, time budget
    eval       EvalSettings (here)                            evaluation and diagnostics in training
    run        RunSettings (here)                             output, seed, device, precision, ...

Values come in layers, later ones winning: the defaults, a recipe (``--recipe``), a YAML file
(``--config``), then command-line flags or keyword arguments. When no layer names a backbone, a
method that needs another kind than the general default declares its own
(``Method.default_backbone``: MAE trains a ViT) and the configuration notes the choice.
Each layer may be written nested (``method: {name: simclr, temperature: 0.2}``, as the resolved
``config.yaml`` is) or flat (``temperature: 0.2``; every setting has a unique flat key, which is
also its ``--flag``), so YAML files of the flat form keep working. Unknown keys are refused
with the closest valid key; a method setting given for a method that does not have it is
refused naming the methods that do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from contrastlab.data.settings import DataSettings
from contrastlab.errors import ConfigError, did_you_mean
from contrastlab.methods import METHODS, method_class
from contrastlab.methods.settings import MethodSettings
from contrastlab.methods.simclr import SimCLRSettings
from contrastlab.models.settings import BackboneSettings
from contrastlab.optim.settings import OptimizerSettings
from contrastlab.settings import Declaration, Settings, declarations, setting
from contrastlab.views.settings import ViewSettings

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")
LOGGERS = ("tensorboard", "mlflow", "wandb")


@dataclass
class ScheduleSettings(Settings):
    """How long training runs and how big a step is."""

    section: ClassVar[str] = "schedule"

    epochs: int = setting(100, "Epochs (ignored when --time-budget is set); 0: no training, "
                          "the initial (or --weights) backbone is evaluated and saved.",
                          source="here: the digits demo", ge=0, le=1_000_000,
                          must_be=">= 0 and <= 1000000")
    batch_size: int = setting(256, "Images per step (the global batch under torchrun).",
                              source="SimCLR's smallest batch", ge=2, le=10_000_000,
                              must_be=">= 2 (a contrastive batch needs negatives) and "
                              "<= 10000000")
    time_budget: float | None = setting(
        None, "Stop after this many seconds of training; the schedule spans the budget. 0: "
        "no budget, the epochs decide (lifts a recipe's budget).",
        source="here", ge=0, le=10_000_000, must_be=">= 0 seconds and <= 10000000")
    micro_batch: int | None = setting(
        None, "GradCache: images per micro-batch of activations; the gradient is the full "
        "batch's, except that batch norm uses per-micro-batch statistics (docs/cli.md).",
        source="here: off", ge=1)

    def check_together(self) -> None:
        if self.time_budget == 0:
            # "no budget": a recipe's budget is lifted and the epochs decide
            object.__setattr__(self, "time_budget", None)


@dataclass
class EvalSettings(Settings):
    """Evaluation and diagnostics during and at the end of training."""

    section: ClassVar[str] = "eval"

    eval_every: int = setting(0, "Evaluate kNN + linear probe every N epochs (0: only at the "
                              "end).", source="here", ge=0, le=1_000_000)
    eval_at_end: bool = setting(True, "kNN + linear probe on the held-out split at the end of "
                                "training (a streamed run reads its shards once more for it).",
                                source="here")
    diagnose_every: int = setting(10, "Embedding diagnostics and collapse alarm every N epochs "
                                  "and at the end (0: off).", source="here", ge=0, le=1_000_000)
    knn_k: int = setting(200, "Neighbours of the kNN evaluation.", source="Wu et al. 2018",
                         ge=1)
    knn_temperature: float = setting(0.1, "Vote weight temperature of the kNN evaluation.",
                                     source="Wu et al. 2018", gt=0)


@dataclass
class RunSettings(Settings):
    """Where the run goes and the machinery it runs on."""

    section: ClassVar[str] = "run"

    out: str = setting("runs/latest", "Run directory (default runs/<method>-<data>-<time>).",
                       source="here")
    seed: int = setting(0, "Seed of initialisation, batch order and views.", source="here")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", source="here")
    precision: str = setting(
        "auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16 or fp64 (exactness checks).",
        source="here", choices=PRECISIONS)
    resume: bool = setting(False, "Continue the run in --out from its last checkpoint.",
                           source="here")
    log_every: int = setting(10, "Write a step record to metrics.jsonl every N steps.",
                             source="here", ge=1)
    deterministic: bool = setting(False, "Deterministic algorithms only.", source="here")
    channels_last: bool = setting(True, "NHWC memory format (faster convolutions on CPU and "
                                  "GPU).", source="here: measured 1.5x on the CPU")
    compile: bool = setting(False, "torch.compile the backbone (compiles during the first "
                            "steps).", source="here: pays only on longer runs")
    sync_batchnorm: bool = setting(True, "Under torchrun: batch norm over the global batch.",
                                   source="SimCLR's global BN")
    keep: int = setting(0, "Also keep a checkpoint every N epochs (0: only last.pt and "
                        "best.pt).", source="here", ge=0,
                        must_be=">= 0 (0: only last.pt and best.pt)")
    checkpoint_every: int = setting(
        0, "Also write last.pt every N steps within an epoch (0: at the end of each epoch); "
        "a killed run then loses at most N steps (long streamed epochs).", source="here", ge=0)
    max_nonfinite_steps: int = setting(20, "Stop after this many non-finite steps in a row "
                                       "(each is skipped).", source="here", ge=1)
    log_to: str = setting("", "Also log to these trackers, comma-separated: tensorboard, mlflow, "
                          "wandb (metrics.jsonl is always written).", source="here")
    data_on_device: str = setting(
        "auto", "Keep the training images on the GPU (batches are then one index operation "
        "there): on, off, or auto (on CUDA when they take under a quarter of the free GPU "
        "memory). On the CPU it changes nothing.", source="here", choices=("auto", "on", "off"))

    def check_together(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        for name in self.loggers:
            if name not in LOGGERS:
                hint = did_you_mean(name, LOGGERS)
                raise ConfigError(f"unknown logger '{name}' in log_to.{hint} Choose from "
                                  f"{', '.join(LOGGERS)}")

    @property
    def loggers(self) -> list[str]:
        """The trackers named in ``log_to``."""
        return [part.strip() for part in self.log_to.split(",") if part.strip()]


#: The sections of a configuration in order, with their settings classes (``method``'s class
#: depends on the chosen method).
SECTIONS: dict[str, type[Settings]] = {
    "data": DataSettings,
    "views": ViewSettings,
    "backbone": BackboneSettings,
    "method": MethodSettings,
    "optimizer": OptimizerSettings,
    "schedule": ScheduleSettings,
    "eval": EvalSettings,
    "run": RunSettings,
}

#: The field of a section that its flat key names (``method: simclr`` is ``method.name``)
NAME_FIELDS = {"data": "source", "method": "name", "backbone": "name", "optimizer": "name"}


@dataclass
class TrainConfig:
    """Everything that defines a training run, section by section (see the module docstring)."""

    data: DataSettings = field(default_factory=DataSettings)
    views: ViewSettings = field(default_factory=ViewSettings)
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    method: MethodSettings = field(default_factory=SimCLRSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    run: RunSettings = field(default_factory=RunSettings)
    #: choices made while resolving the layers that the user should hear about (e.g. the
    #: method's own default backbone); the trainer prints them. Not a setting.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        self.check()

    @property
    def method_name(self) -> str:
        return self.method.name

    # ---------------------------------------------------------------- checks
    def check(self) -> None:
        """Rules between sections (each section checked its own values when it was made)."""
        for section in SECTIONS:
            getattr(self, section).check()
        method = method_class(self.method.name)
        if type(self.method) is not method.Settings:
            raise ConfigError(f"the method section holds {type(self.method).__name__} but the "
                              f"method '{self.method.name}' takes {method.Settings.__name__}")
        batch = self.schedule.batch_size
        queue = getattr(self.method, "queue_size", None)
        if queue is not None and 0 < queue < batch:
            raise ConfigError(
                f"queue_size {queue} is smaller than the batch ({batch}): the queue must hold at "
                f"least one batch of keys; use --queue-size {batch} or more (or 0 for no queue "
                "where the method allows it)"
            )
        self._check_views(method)
        self._check_micro_batch(method)

    def _check_views(self, method: type) -> None:
        views, image_size = self.views, self.data.image_size
        if (views.local_crop_size is not None and image_size is not None
                and views.local_crop_size > image_size):
            raise ConfigError(
                f"local_crop_size {views.local_crop_size} is larger than image_size {image_size};"
                f" it must be in 1..{image_size} (local crops are smaller than the global views)"
            )
        if views.asymmetric:
            count = method.views_per_image(self.method)
            if count != 2:
                given = "blur_p_views" if views.blur_p_views is not None else "solarize_p_views"
                raise ConfigError(
                    f"{given} sets the two views of a two-view method, but method "
                    f"'{self.method.name}' makes {count} global view(s) per image; use "
                    "--blur-p / --solarize-p instead"
                )
        num_local = views.num_local_crops
        if num_local and not method.supports_multi_crop:
            multi = sorted(name for name, cls in METHODS.items() if cls.supports_multi_crop)
            raise ConfigError(
                f"method '{self.method.name}' cannot use multi-crop views (num_local_crops="
                f"{num_local}); methods that can: {', '.join(multi) or 'none'}"
            )
        if num_local is None:
            num_local = method.default_local_crops
        if num_local and views.min_view_size is not None:
            raise ConfigError(
                f"min_view_size (progressive resizing) is for the global views only, but method "
                f"'{self.method.name}' adds {num_local} local views (multi-crop); pass "
                "--num-local-crops 0 or leave out --min-view-size"
            )
        if views.min_view_size is not None and self.backbone.needs_geometry:
            raise ConfigError(
                f"backbone '{self.backbone.name}' takes images of one size only; progressive "
                "resizing (min_view_size) needs a convolutional backbone"
            )
        if (views.min_view_size is not None and image_size is not None
                and views.min_view_size > image_size):
            raise ConfigError(f"min_view_size {views.min_view_size} is larger than image_size "
                              f"{image_size}; it must be in 4..{image_size}")
        if num_local and self.backbone.needs_geometry:
            raise ConfigError(
                f"backbone '{self.backbone.name}' takes images of one size only, but method "
                f"'{self.method.name}' adds {num_local} smaller local views (multi-crop); pass "
                "--num-local-crops 0 or use a convolutional backbone"
            )

    def _check_micro_batch(self, method: type) -> None:
        micro = self.schedule.micro_batch
        if micro is None:
            return
        if not method.supports_grad_cache:
            able = sorted(name for name, cls in METHODS.items() if cls.supports_grad_cache)
            raise ConfigError(
                f"micro_batch is not available for method '{self.method.name}' (GradCache needs "
                "a loss computed from per-image embeddings, without momentum encoder or queue); "
                f"methods that can use it: {', '.join(able)}. Remove --micro-batch"
            )
        if micro > self.schedule.batch_size:
            raise ConfigError(
                f"micro_batch {micro} is larger than batch_size {self.schedule.batch_size}; "
                f"pass --micro-batch {self.schedule.batch_size} or less"
            )

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The nested form (the resolved ``config.yaml``): one mapping per section, the
        method's with its ``name`` first."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            values = getattr(self, section).to_dict()
            if section == "method":
                values = {"name": self.method.name, **values}
            out[section] = values
        return out

    def flat(self) -> dict[str, Any]:
        """``{flat key: value}`` of every setting (the form of flags and of old run files)."""
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "configuration") -> TrainConfig:
        """Build from a nested, flat or mixed mapping (see the module docstring)."""
        return cls.from_layers([(values, source)])

    @classmethod
    def from_layers(cls, layers: list[tuple[Mapping[str, Any], str]]) -> TrainConfig:
        """Build from several mappings, later ones winning (defaults < recipe < file < flags).
        Each layer is ``(mapping, source)``; ``source`` names it in error messages."""
        merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        sources: dict[tuple[str, str], str] = {}
        for values, source in layers:
            for (section, name), value in normalise(values, source).items():
                merged[section][name] = value
                sources[(section, name)] = source
        sections: dict[str, Settings] = {}
        method_values = dict(merged["method"])
        method_name = method_values.pop("name", "simclr")
        method_source = sources.get(("method", "name"), "configuration")
        if not isinstance(method_name, str):
            raise ConfigError(f"method in {method_source} must be of type str, got "
                              f"{method_name!r}")
        method = method_class(method_name)
        for name in method_values:
            _check_method_key(name, method_name, sources[("method", name)])
        notes: list[str] = []
        if ("backbone", "name") not in sources and method.default_backbone is not None:
            merged["backbone"]["name"] = method.default_backbone
            sources[("backbone", "name")] = f"method '{method_name}'"
            notes.append(f"no backbone given: method '{method_name}' uses its default, "
                         f"{method.default_backbone} (choose another with --backbone)")
        for section, settings_class in SECTIONS.items():
            if section == "method":
                sections[section] = _build(method.Settings, method_values, sources, section)
            else:
                sections[section] = _build(settings_class, merged[section], sources, section)
        return cls(**sections, notes=tuple(notes))  # type: ignore[arg-type]

    def save_yaml(self, path: Path) -> None:
        """Write the resolved configuration (nested, every setting) to ``path``."""
        text = ("# contrastlab: the resolved configuration of this run (defaults < recipe < "
                "--config file < flags)\n" + yaml.safe_dump(self.to_dict(), sort_keys=False,
                                         default_flow_style=None))
        Path(path).write_text(text, encoding="utf-8")

    def replace(self, **sections: Any) -> TrainConfig:
        """A copy with whole sections replaced (checked again)."""
        return dataclasses.replace(self, **sections)


def _build(settings_class: type[Settings], values: dict[str, Any],
           sources: dict[tuple[str, str], str], section: str) -> Settings:
    """One section from its values; a wrong type names the layer the value came from."""
    for name, value in values.items():
        declaration = _declaration(settings_class, name)
        values[name] = _coerce_from(declaration, value, sources[(section, name)])
    return settings_class.from_mapping(values, f"the {section} settings")


def _coerce_from(declaration: Declaration, value: Any, source: str) -> Any:
    from contrastlab.settings import coerce

    return coerce(declaration.key, value, declaration.annotation, source)


def _declaration(settings_class: type[Settings], name: str) -> Declaration:
    for declaration in declarations(settings_class):
        if declaration.name == name:
            return declaration
    raise ConfigError(f"unknown key '{name}' in the {settings_class.section} settings")


def _check_method_key(name: str, method_name: str, source: str) -> None:
    """Refuse a method setting the chosen method does not have, naming those that have it."""
    if name in {d.name for d in declarations(METHODS[method_name].Settings)}:
        return
    users = method_users().get(name, [])
    if users:
        raise ConfigError(
            f"{name} is not a setting of method '{method_name}'; it is used by "
            f"{', '.join(users)}: remove it or choose one of those methods (in {source})"
        )
    hint = did_you_mean(name, method_users(), cutoff=0.5)
    raise ConfigError(f"unknown key '{name}' of method in {source}.{hint}")


@functools.cache
def method_users() -> dict[str, list[str]]:
    """``{method setting: [methods that have it]}``."""
    users: dict[str, list[str]] = {}
    for name in sorted(METHODS):
        for declaration in declarations(METHODS[name].Settings):
            users.setdefault(declaration.name, []).append(name)
    return users


@functools.cache
def flat_keys() -> dict[str, tuple[str, str]]:
    """``{flat key: (section, field)}`` of every setting of every section and method."""
    keys: dict[str, tuple[str, str]] = {}
    for section, settings_class in SECTIONS.items():
        if section == "method":
            keys["method"] = ("method", "name")
            for name in method_users():
                keys[name] = ("method", name)
            continue
        for declaration in declarations(settings_class):
            keys[declaration.key] = (section, declaration.name)
    return keys


def normalise(values: Mapping[str, Any], source: str) -> dict[tuple[str, str], Any]:
    """``{(section, field): value}`` of a nested, flat or mixed mapping.

    A section name holding a mapping is the nested form; a section name holding a string is
    that section's name field (``method: simclr``); any other key is a flat key. In the flat
    form a method setting of ``None`` means "the method's default" (as in run files written
    before the sections existed), so it is dropped.
    """
    keys = flat_keys()
    found: dict[tuple[str, str], Any] = {}

    def put(target: tuple[str, str], value: Any, key: str) -> None:
        if target in found and found[target] != value:
            raise ConfigError(f"{source} gives {key} twice ({found[target]!r} and {value!r}); "
                              "keep one")
        found[target] = value

    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"key {key!r} in {source} is not a name")
        if key in SECTIONS and isinstance(value, Mapping):
            for name, inner in value.items():
                if section_field_known(key, str(name)):
                    put((key, str(name)), inner, f"{key}.{name}")
                else:
                    hint = did_you_mean(str(name).replace("-", "_"), section_fields(key),
                                        cutoff=0.5)
                    raise ConfigError(f"unknown key '{name}' in section '{key}' of {source}."
                                      f"{hint}")
        elif key in keys:
            section, name = keys[key]
            if section == "method" and name != "name" and value is None:
                continue
            put((section, name), value, key)
        elif key in SECTIONS:
            raise ConfigError(f"section '{key}' in {source} must be a mapping of settings, got "
                              f"{value!r}")
        else:
            normalised = key.replace("-", "_")
            hint = did_you_mean(normalised, [*keys, *SECTIONS], cutoff=0.5)
            raise ConfigError(f"unknown key '{key}' in {source}.{hint}")
    return found


def section_fields(section: str) -> list[str]:
    """The field names a section accepts in the nested form."""
    if section == "method":
        return ["name", *method_users()]
    return [d.name for d in declarations(SECTIONS[section])]


def section_field_known(section: str, name: str) -> bool:
    return name in section_fields(section)


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{flat key: value}`` of a nested, flat or mixed mapping, without checking values (for
    reading run files of any age)."""
    flat: dict[str, Any] = {}
    keys = flat_keys()
    by_target = {target: key for key, target in keys.items()}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for name, inner in value.items():
                flat[by_target.get((key, name), name)] = inner
        else:
            flat[key] = value
    return flat


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings (checked later, with the other layers)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {error.start}); save it "
                          "as UTF-8") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of key: value, got a "
                          f"{type(values).__name__}")
    normalise(values, f"config file '{path}'")  # unknown keys named now, with the file
    return values


def build_config(
    yaml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    recipe_name: str | None = None,
) -> TrainConfig:
    """Defaults < recipe < YAML file < overrides (flags). ``None`` overrides mean "not given"."""
    layers: list[tuple[Mapping[str, Any], str]] = []
    if recipe is not None:
        layers.append((recipe, f"recipe '{recipe_name}'" if recipe_name else "the recipe"))
    if yaml_path is not None:
        layers.append((load_yaml(yaml_path), f"config file '{yaml_path}'"))
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    layers.append((given, "configuration"))
    return TrainConfig.from_layers(layers)


def field_names() -> list[str]:
    """Every flat key (YAML key and ``--flag`` name)."""
    return list(flat_keys())


__all__ = ["LOGGERS", "PRECISIONS", "SECTIONS", "EvalSettings", "RunSettings", "ScheduleSettings",
           "TrainConfig", "build_config", "field_names", "flat_keys", "flatten", "load_yaml",
           "method_users", "normalise"]
