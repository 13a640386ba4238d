"""The backbone's settings (the ``backbone:`` section of a configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from contrastlab.errors import ConfigError
from contrastlab.models.backbones import GEOMETRY_BACKBONES, check_backbone_name, takes_geometry
from contrastlab.settings import Settings, setting


@dataclass
class BackboneSettings(Settings):
    """Which encoder to train (a registered name or ``timm:<name>``), its geometry where it needs
    one, and the weights it starts from."""

    section: ClassVar[str] = "backbone"

    name: str = setting(
        "convnet", "Encoder: convnet, convnet-small, convnet-x256, resnet18/34/50 (and -cifar "
        "variants with the small-image stem), vit-micro/tiny/small, or timm:<name> for any timm "
        "model (pip install timm). None given: a method that needs another kind uses its own "
        "(docs/methods.md).", key="backbone", source="here: a small ConvNet for CPUs")
    patch_size: int | None = setting(None, "ViT patch size in pixels (also for timm ViTs); none: "
                                     "the ViT's own.", source="the ViT registry", ge=1)
    weights: str | None = setting(
        None, "Start from these backbone weights: a state dict file (.pt/.pth, or .safetensors) "
        "of timm, torchvision or a contrastlab run (RUN/checkpoints/last.pt); keys are matched "
        "to the backbone and every shape must fit (docs/cli.md).",
        source="here: random initialisation")

    def check_together(self) -> None:
        check_backbone_name(self.name)
        if self.patch_size is not None and not takes_geometry(self.name):
            raise ConfigError(
                f"patch_size is a setting of ViT backbones ({', '.join(sorted(GEOMETRY_BACKBONES))}"
                f", timm ViTs), not of '{self.name}'"
            )
        if self.weights is not None and not self.weights.strip():
            raise ConfigError("weights must name a file, got an empty string; leave it out for "
                              "random initialisation")

    @property
    def needs_geometry(self) -> bool:
        """True for backbones built for one image size (contrastlab's ViTs; a timm model says
        so only once built)."""
        return self.name in GEOMETRY_BACKBONES


__all__ = ["BackboneSettings"]
