"""A run's model metadata: everything needed to rebuild its encoder and preprocessing without
the configuration (saved in every checkpoint as ``model_meta``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from contrastlab.config import TrainConfig
from contrastlab.data import DatasetSplits
from contrastlab.methods import Method, MethodSettings, build_method, method_class
from contrastlab.models import Backbone, build_backbone
from contrastlab.models.backbones import takes_geometry

#: ``model_meta["backbone"]`` of a run trained on a backbone module given from Python
CUSTOM_BACKBONE = "custom"


def model_meta(config: TrainConfig, splits: DatasetSplits, image_size: int,
               mean: tuple[float, ...], std: tuple[float, ...],
               backbone: nn.Module | None = None) -> dict[str, Any]:
    """The metadata of a run: method, backbone, input geometry and normalisation, the method's
    settings (with what the data decides filled in), the class names, and ``weights``: the
    ``--weights`` file the backbone started from (``{"path", "sha256", "tensors"}``, set by the
    trainer once loaded) or None. Rebuilding never reads that file again (the checkpoint holds
    the trained weights)."""
    return {
        "method": config.method.name,
        "backbone": config.backbone.name if backbone is None else CUSTOM_BACKBONE,
        "backbone_class": None if backbone is None else type(backbone).__qualname__,
        "backbone_options": backbone_options(config, image_size),
        "in_channels": splits.train.channels,
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "method_kwargs": method_settings_for_data(config, splits).to_dict(),
        "classes": splits.train.classes,
        "weights": None,
    }


def backbone_options(config: TrainConfig, image_size: int) -> dict[str, Any]:
    """Geometry for backbones built with it (ViTs, and timm models, which use it when they take
    an image size); empty for convolutional ones."""
    if not takes_geometry(config.backbone.name):
        return {}
    return {"image_size": image_size, "patch_size": config.backbone.patch_size}


def method_settings_for_data(config: TrainConfig, splits: DatasetSplits) -> MethodSettings:
    """The configured method settings with what the data decides filled in (``num_classes`` of
    the supervised baseline, when left at 0)."""
    settings = config.method
    if getattr(settings, "num_classes", None) == 0:
        labels = splits.train.labels
        count = len(splits.train.classes) if splits.train.classes else (
            int(labels.max()) + 1 if labels is not None else 0)
        settings = settings.replace(num_classes=count)  # type: ignore[call-arg]
    return settings


def rebuild_method(meta: dict[str, Any], backbone: nn.Module | None = None) -> Method:
    """A freshly initialised method of the architecture ``meta`` describes; a run trained on a
    backbone module given from Python needs that module (``backbone``) again."""
    if backbone is None and meta["backbone"] == CUSTOM_BACKBONE:
        from contrastlab.errors import CheckpointError

        raise CheckpointError(
            f"this run was trained on a backbone module given from Python "
            f"({meta.get('backbone_class')}); pass the same module again "
            "(contrastlab.load(run, backbone=module))"
        )
    settings = method_class(meta["method"]).make_settings(None, meta["method_kwargs"])
    if backbone is not None:
        return method_class(meta["method"])(as_backbone(backbone), settings)
    return build_method(meta["method"], meta["backbone"], meta["in_channels"],
                        backbone_options=meta.get("backbone_options"), settings=settings)


def build_backbone_of(meta: dict[str, Any]) -> Backbone:
    """A freshly initialised backbone of the architecture ``meta`` describes (a registered or
    family name; not a custom module)."""
    return build_backbone(meta["backbone"], meta["in_channels"],
                          **(meta.get("backbone_options") or {}))


def as_backbone(module: nn.Module) -> Backbone:
    """``module`` as a backbone: it must map images (N, C, H, W) to features (N, D) and say D in
    an ``output_dim`` attribute (set it, or wrap the module, when it has none)."""
    from contrastlab.errors import ConfigError

    dim = getattr(module, "output_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(
            f"a backbone module must have an integer output_dim (its feature size), but "
            f"{type(module).__name__} has output_dim={dim!r}; set module.output_dim = D"
        )
    return module  # type: ignore[return-value]


__all__ = ["CUSTOM_BACKBONE", "as_backbone", "backbone_options", "build_backbone_of",
           "method_settings_for_data", "model_meta", "rebuild_method"]
