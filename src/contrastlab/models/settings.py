"""The backbone's settings (the ``backbone:`` section of a configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastlab.errors import ConfigError, unknown_name
from contrastlab.models.backbones import GEOMETRY_BACKBONES, list_backbones
from contrastlab.settings import Settings, setting


@dataclass
class BackboneSettings(Settings):
    """Which encoder to train (a registered name) and its geometry where it needs one."""

    section: ClassVar[str] = "backbone"

    name: str = setting(
        "convnet", "Encoder: convnet, convnet-small, convnet-x256, resnet18/34/50 (and -cifar "
        "variants with the small-image stem), vit-micro/tiny/small; see `contrastlab "
        "backbones`.", key="backbone", source="here: a small ConvNet for CPUs")
    patch_size: int | None = setting(None, "ViT patch size in pixels; none: the ViT's own.",
                                     source="the ViT registry", ge=1)

    def check_together(self) -> None:
        if self.name not in list_backbones():
            raise unknown_name("backbone", self.name, list_backbones())
        if self.patch_size is not None and self.name not in GEOMETRY_BACKBONES:
            raise ConfigError(
                f"patch_size is a setting of ViT backbones ({', '.join(sorted(GEOMETRY_BACKBONES))}"
                f"), not of '{self.name}'"
            )

    @property
    def needs_geometry(self) -> bool:
        """True for backbones built for one image size (ViTs)."""
        return self.name in GEOMETRY_BACKBONES


__all__ = ["BackboneSettings"]
