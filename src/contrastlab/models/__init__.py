"""Backbones (registry by name) and heads."""

from contrastlab.models import (
    timm_backbone,  # noqa: F401  (registers the timm: family)
    vit,  # noqa: F401  (registers the ViT backbones)
)
from contrastlab.models.backbones import Backbone, ConvNet, build_backbone, list_backbones
from contrastlab.models.heads import ProjectionHead

__all__ = ["Backbone", "ConvNet", "ProjectionHead", "build_backbone", "list_backbones"]
