"""Typed training configuration, validated before any data is read or any compute starts.

Values come from three layers, later ones winning: the defaults below, a YAML file (``--config``),
then command-line flags. Unknown keys are rejected with the closest valid key suggested; values of
the wrong type or out of range are rejected with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contrastlab.errors import ConfigError, did_you_mean, unknown_name

OPTIMIZERS = ("lars", "sgd", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")
MINING = ("none", "batch-hard", "semi-hard")

#: Keys that are hyper-parameters of a method: passed to the method's constructor when set (the
#: constructor's argument of the same name), refused when the chosen method has no such argument.
METHOD_FIELDS = (
    "temperature", "projection_dim", "projection_hidden_dim", "prediction_hidden_dim",
    "queue_size", "ema_momentum", "ema_cosine", "num_prototypes", "freeze_prototypes_steps",
    "sinkhorn_iterations", "sinkhorn_epsilon", "teacher_temperature",
    "warmup_teacher_temperature", "teacher_temperature_warmup", "center_momentum",
    "off_diagonal_weight", "invariance_weight", "variance_weight", "covariance_weight",
    "weight_sigma", "margin", "mining", "mask_ratio", "loss_chunk_size", "bn_groups",
    "num_views",
)



@dataclass
class TrainConfig:
    """Everything that defines a training run. Field names are the YAML keys; flags use dashes."""

    # what to train
    method: str = "simclr"
    backbone: str = "convnet"
    data: str = "digits"
    out: str = "runs/latest"
    # data
    test_fraction: float = 0.2
    split_seed: int = 0
    skip_bad_files: bool = False
    image_size: int | None = None
    # schedule
    epochs: int = 100
    batch_size: int = 256
    time_budget: float | None = None
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_fraction: float = 0.1
    # method hyper-parameters: None means the method's own (paper) default; a value given for a
    # method that does not use it is refused (see METHOD_FIELDS)
    temperature: float | None = None
    projection_dim: int | None = None
    projection_hidden_dim: int | None = None
    prediction_hidden_dim: int | None = None
    queue_size: int | None = None
    ema_momentum: float | None = None
    ema_cosine: bool | None = None
    num_prototypes: int | None = None
    freeze_prototypes_steps: int | None = None
    sinkhorn_iterations: int | None = None
    sinkhorn_epsilon: float | None = None
    teacher_temperature: float | None = None
    warmup_teacher_temperature: float | None = None
    teacher_temperature_warmup: float | None = None
    center_momentum: float | None = None
    off_diagonal_weight: float | None = None
    invariance_weight: float | None = None
    variance_weight: float | None = None
    covariance_weight: float | None = None
    weight_sigma: float | None = None
    margin: float | None = None
    mining: str | None = None
    mask_ratio: float | None = None
    # MoCo v2 shuffling BN: ghost groups of the global batch (a multiple of the process count)
    bn_groups: int | None = None
    # views per image for methods that take it as a hyper-parameter (SupCon); None: the method's own
    num_views: int | None = None
    patch_size: int | None = None
    # rows per tile of the memory-efficient (tiled) contrastive loss; None: automatic
    loss_chunk_size: int | None = None
    # GradCache: images per micro-batch of activations (the last one may be smaller); None: off
    micro_batch: int | None = None
    # views (num_local_crops None: the method's default, e.g. 6 for SwAV/DINO, 0 otherwise)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    num_local_crops: int | None = None
    local_crop_size: int | None = None
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    grey_p: float = 0.2
    blur_p: float = 0.5
    flip_p: float = 0.5
    rotation: float = 0.0
    # evaluation
    eval_every: int = 0
    diagnose_every: int = 10
    knn_k: int = 200
    knn_temperature: float = 0.1
    # machinery
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    log_every: int = 10
    deterministic: bool = False
    channels_last: bool = True
    # torch.compile the backbone (TorchInductor; the first steps pay the compilation)
    compile: bool = False
    # multi-process (torchrun): batch norm over the global batch (methods that allow it)
    sync_batchnorm: bool = True
    # fault tolerance
    keep: int = 0
    max_nonfinite_steps: int = 20
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        _check_types(self)
        _check_finite(self)
        _positive(self, "epochs", "batch_size", "knn_k", "log_every", "max_nonfinite_steps")
        if self.keep < 0:
            raise ConfigError(f"keep must be >= 0 (0: only last.pt and best.pt), got {self.keep}")
        _strictly_positive_if_set(self, "clip_grad_norm")
        _positive_if_set(self, "projection_dim", "projection_hidden_dim", "prediction_hidden_dim",
                         "num_prototypes", "sinkhorn_iterations", "patch_size", "local_crop_size",
                         "bn_groups", "num_views")
        _positive_if_set(self, "loss_chunk_size", "micro_batch")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch_size must be >= 2 (a contrastive batch needs negatives), got "
                f"{self.batch_size}"
            )
        _strictly_positive_float(self, "knn_temperature")
        _strictly_positive_if_set(self, "temperature", "teacher_temperature",
                                  "warmup_teacher_temperature", "sinkhorn_epsilon", "margin",
                                  "weight_sigma")
        for key in ("ema_momentum", "center_momentum"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}")
        for key in ("off_diagonal_weight", "invariance_weight", "variance_weight",
                    "covariance_weight"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if self.teacher_temperature_warmup is not None and not (
            0.0 <= self.teacher_temperature_warmup <= 1.0
        ):
            raise ConfigError(
                "teacher_temperature_warmup is a share of the schedule and must be in [0, 1], got "
                f"{self.teacher_temperature_warmup}"
            )
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.mining is not None and self.mining not in MINING:
            raise ConfigError(f"unknown mining '{self.mining}'; choose one of {', '.join(MINING)}")
        if self.freeze_prototypes_steps is not None and self.freeze_prototypes_steps < 0:
            raise ConfigError(
                f"freeze_prototypes_steps must be >= 0, got {self.freeze_prototypes_steps}"
            )
        if self.queue_size is not None:
            if self.queue_size < 0:
                raise ConfigError(f"queue_size must be >= 0 (0: no queue), got {self.queue_size}")
            if 0 < self.queue_size < self.batch_size:
                raise ConfigError(
                    f"queue_size {self.queue_size} is smaller than the batch ({self.batch_size}): "
                    f"the queue must hold at least one batch of keys; use --queue-size "
                    f"{self.batch_size} or more (or 0 for no queue where the method allows it)"
                )
        if self.num_local_crops is not None and self.num_local_crops < 0:
            raise ConfigError(f"num_local_crops must be >= 0, got {self.num_local_crops}")
        lo, hi = self.local_crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                "local_crop_scale must be two numbers with 0 < min <= max <= 1, got "
                f"{self.local_crop_scale}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time_budget must be > 0 seconds, got {self.time_budget}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError(f"image_size must be >= 4 pixels, got {self.image_size}")
        if (self.local_crop_size is not None and self.image_size is not None
                and self.local_crop_size > self.image_size):
            raise ConfigError(
                f"local_crop_size {self.local_crop_size} is larger than image_size "
                f"{self.image_size}; it must be in 1..{self.image_size} (local crops are smaller "
                "than the global views)"
            )
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"crop_scale must be two numbers with 0 < min <= max <= 1, got {self.crop_scale}"
            )
        if self.jitter_strength < 0:
            raise ConfigError(f"jitter_strength must be >= 0, got {self.jitter_strength}")
        for key in ("jitter_p", "grey_p", "blur_p", "flip_p"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key} is a probability and must be in [0, 1], got {value}")
        if not 0.0 <= self.rotation <= 180.0:
            raise ConfigError(
                f"rotation is in degrees and must be in [0, 180], got {self.rotation}"
            )
        if self.eval_every < 0:
            raise ConfigError(
                f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}"
            )
        if self.diagnose_every < 0:
            raise ConfigError(
                f"diagnose_every must be >= 0 (0 = no diagnostics), got {self.diagnose_every}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer '{self.optimizer}'; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        # names resolved against the registries
        from contrastlab.methods import list_methods
        from contrastlab.models import list_backbones

        if self.method not in list_methods():
            raise unknown_name("method", self.method, list_methods())
        if self.backbone not in list_backbones():
            raise unknown_name("backbone", self.backbone, list_backbones())
        check_method_fields(self)
        check_micro_batch_setting(self)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["crop_scale"] = list(self.crop_scale)
        out["local_crop_scale"] = list(self.local_crop_scale)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> TrainConfig:
        check_keys(values, source)
        return cls(**_coerce_all(values, source))

    def save_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def method_parameters(method: str) -> set[str]:
    """Names of the hyper-parameters the method's constructor accepts."""
    import inspect

    from contrastlab.methods import METHODS

    return set(inspect.signature(METHODS[method].__init__).parameters) - {"self", "backbone"}


def method_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The method hyper-parameters of ``config`` that are set (not None), as constructor kwargs."""
    accepted = method_parameters(config.method)
    return {key: getattr(config, key) for key in METHOD_FIELDS
            if hasattr(config, key) and getattr(config, key) is not None and key in accepted}


def check_method_fields(config: TrainConfig) -> None:
    """Refuse a method hyper-parameter the chosen method does not use, naming those that do."""
    from contrastlab.methods import METHODS

    accepted = method_parameters(config.method)
    for key in METHOD_FIELDS:
        if getattr(config, key, None) is not None and key not in accepted:
            users = sorted(name for name in METHODS if key in method_parameters(name))
            used_by = (f"; it is used by {', '.join(users)}: remove it or choose one of those "
                       "methods" if users else "; remove it")
            raise ConfigError(f"{key} is not a setting of method '{config.method}'{used_by}")
    from contrastlab.models.backbones import GEOMETRY_BACKBONES

    if config.patch_size is not None and config.backbone not in GEOMETRY_BACKBONES:
        raise ConfigError(
            f"patch_size is a setting of ViT backbones ({', '.join(sorted(GEOMETRY_BACKBONES))}),"
            f" not of '{config.backbone}'"
        )
    num_local = config.num_local_crops
    if num_local and not METHODS[config.method].supports_multi_crop:
        multi = sorted(name for name, cls in METHODS.items() if cls.supports_multi_crop)
        raise ConfigError(
            f"method '{config.method}' cannot use multi-crop views (num_local_crops="
            f"{num_local}); methods that can: {', '.join(multi) or 'none'}"
        )
    if num_local is None:
        num_local = METHODS[config.method].default_local_crops
    if num_local and config.backbone in GEOMETRY_BACKBONES:
        raise ConfigError(
            f"backbone '{config.backbone}' takes images of one size only, but method "
            f"'{config.method}' adds {num_local} smaller local views (multi-crop); pass "
            "--num-local-crops 0 or use a convolutional backbone"
        )


def check_micro_batch_setting(config: TrainConfig) -> None:
    """Refuse ``micro_batch`` for a method that cannot train with GradCache, or larger than the
    batch (the trainer also checks the batch of each process)."""
    if config.micro_batch is None:
        return
    from contrastlab.methods import METHODS

    if not METHODS[config.method].supports_grad_cache:
        able = sorted(name for name, cls in METHODS.items() if cls.supports_grad_cache)
        raise ConfigError(
            f"micro_batch is not available for method '{config.method}' (GradCache needs a loss "
            "computed from per-image embeddings, without momentum encoder or queue); methods "
            f"that can use it: {', '.join(able)}. Remove --micro-batch"
        )
    if config.micro_batch > config.batch_size:
        raise ConfigError(
            f"micro_batch {config.micro_batch} is larger than batch_size {config.batch_size}; "
            f"pass --micro-batch {config.batch_size} or less"
        )


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_keys(values: dict[str, Any], source: str) -> None:
    """Reject keys that are not fields of :class:`TrainConfig`, suggesting the closest one."""
    names = field_names()
    for key in values:
        if key not in names:
            normalised = str(key).replace("-", "_")
            hint = did_you_mean(normalised, names, cutoff=0.5)
            raise ConfigError(f"unknown key '{key}' in {source}.{hint}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of configuration keys (validated later, with the others)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of key: value, got a "
                          f"{type(values).__name__}")
    check_keys(values, f"config file '{path}'")
    return values


def build_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults < YAML file < overrides (flags). ``None`` overrides mean 'not given'."""
    values: dict[str, Any] = {}
    if yaml_path is not None:  # typed here, so that a wrong type names the file
        values.update(_coerce_all(load_yaml(yaml_path), f"config file '{yaml_path}'"))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return TrainConfig.from_dict(values)


# -------------------------------------------------------------------- helpers
def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Coerce a YAML/flag value to the annotated type or raise a ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], source)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"{key} in {source} must be {len(args)} numbers (e.g. 0.08,1.0), got {value!r}"
            )
        return tuple(_coerce(key, v, a, source) for v, a in zip(value, args, strict=True))
    bad = ConfigError(f"{key} in {source} must be of type {_type_name(annotation)}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if annotation is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if annotation is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if annotation is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise bad
    return value


def _coerce_all(values: dict[str, Any], source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {k: _coerce(k, v, hints[k], source) for k, v in values.items()}


def _check_types(config: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        setattr(config, f.name, _coerce(f.name, value, hints[f.name], "configuration"))


def _check_finite(config: TrainConfig) -> None:
    """Refuse NaN and infinity in any number (they pass ``<``/``>`` range checks unnoticed)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{f.name} must be a finite number, got {value}")


def _positive(config: TrainConfig, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")


def _positive_if_set(config: TrainConfig, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")


def _strictly_positive_if_set(config: TrainConfig, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


def _strictly_positive_float(config: TrainConfig, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


__all__ = ["METHOD_FIELDS", "TrainConfig", "build_config", "check_keys", "field_names", "load_yaml",
           "method_kwargs", "method_parameters"]
