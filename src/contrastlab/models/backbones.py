"""Backbones by name: a registry of encoders that map images (N, C, H, W) to features (N, D).

- ``convnet``: a small CPU-friendly ConvNet for 28x28 / 32x32 images (and smaller, e.g. 8x8 digits).
- ``resnet18``, ``resnet34``, ``resnet50``: torchvision's ResNets (He et al. 2016), randomly
  initialised, classifier removed.
- ``resnet18-cifar`` etc.: the CIFAR variant used by SimCLR for small images (Chen et al. 2020,
  Appendix B.9): a 3x3 stride-1 stem convolution and no max-pool.
- ``vit-micro``, ``vit-tiny``, ``vit-small`` (models/vit.py): built for one image size
  (:data:`GEOMETRY_BACKBONES`).
- ``timm:<name>`` (models/timm_backbone.py): any model of the timm library, a *family* of
  backbones named by a prefix (:data:`BACKBONE_FAMILIES`).

Every backbone exposes ``output_dim`` and accepts 1- or 3-channel input (``in_channels``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from contrastlab.errors import ConfigError, unknown_name


class Backbone(nn.Module):
    """An encoder with a known feature dimension."""

    output_dim: int


class ConvNet(Backbone):
    """A small ConvNet: three stages of (conv3x3-BN-ReLU) x 2 with 2x2 max-pooling between stages,
    then global average pooling. Widths ``width, 2*width, 4*width``; output_dim = 4*width.

    Works for any input of at least 4x4 pixels (pooling is skipped when the map is already 1 pixel).

    ``final_relu=False`` pools the last batch-normalised convolution without the ReLU, giving
    zero-centred instead of all-positive features; the registry's ``convnet`` keeps the standard
    ReLU and ``convnet-centred`` is the other variant (compared in docs/benchmarks.md, MNIST).

    ``expand_to=D`` adds a 1x1 convolution (BN, ReLU) from the last stage to D channels before
    pooling, as MobileNet does before its classifier: wider, sparser features for little compute
    (the 1x1 convolution runs at the smallest resolution).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, final_relu: bool = True,
                 expand_to: int | None = None) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, out in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        if expand_to is not None:
            layers += [
                nn.Conv2d(channels, expand_to, 1, bias=False),
                nn.BatchNorm2d(expand_to),
                nn.ReLU(inplace=True),
            ]
            channels = expand_to
        if not final_relu:
            layers.pop()
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its classifier; ``cifar=True`` swaps in the small-image stem."""

    def __init__(self, depth: int, in_channels: int = 3, cifar: bool = False) -> None:
        super().__init__()
        from torchvision.models import resnet18, resnet34, resnet50

        constructors = {18: resnet18, 34: resnet34, 50: resnet50}
        net = constructors[depth](weights=None)
        if cifar:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.output_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


BACKBONES: dict[str, Callable[[int], Backbone]] = {
    "convnet": lambda c: ConvNet(c, width=32),
    "convnet-small": lambda c: ConvNet(c, width=16),
    "convnet-centred": lambda c: ConvNet(c, width=32, final_relu=False),
    "convnet-wide": lambda c: ConvNet(c, width=64),
    # convnet-small, widened to 256 features by a 1x1 convolution and pooled without the final
    # ReLU: the MNIST benchmark's backbone (docs/benchmarks.md)
    "convnet-small-x256": lambda c: ConvNet(c, width=16, expand_to=256, final_relu=False),
    # the same at twice the width (32, 64, 128 channels): the Fashion-MNIST benchmark's backbone
    "convnet-x256": lambda c: ConvNet(c, width=32, expand_to=256, final_relu=False),
    "resnet18": lambda c: TorchvisionResNet(18, c),
    "resnet34": lambda c: TorchvisionResNet(34, c),
    "resnet50": lambda c: TorchvisionResNet(50, c),
    "resnet18-cifar": lambda c: TorchvisionResNet(18, c, cifar=True),
    "resnet34-cifar": lambda c: TorchvisionResNet(34, c, cifar=True),
    "resnet50-cifar": lambda c: TorchvisionResNet(50, c, cifar=True),
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (besides the families' ``prefix:<name>``)."""
    return sorted({*BACKBONES, *GEOMETRY_BACKBONES})


#: Builders of backbones that need the image geometry (ViTs): name -> f(in_channels, image_size,
#: patch_size). Other modules (e.g. models/vit.py) add theirs here.
GEOMETRY_BACKBONES: dict[str, Callable[[int, int, int | None], Backbone]] = {}


@dataclass(frozen=True)
class BackboneFamily:
    """Backbones named ``<prefix><model>`` and built by another library (``timm:resnet50``).

    ``build(model, in_channels, image_size, patch_size)`` gets the run's geometry and decides
    whether the model uses it; ``check(model)`` raises ConfigError for a model the library does
    not know (or when the library is missing), so the name is refused before any data is read.
    """

    prefix: str
    build: Callable[[str, int, int | None, int | None], Backbone]
    check: Callable[[str], None]
    #: shown in messages: what the family is and how to get it
    description: str
    #: a name of the family, for messages
    example: str


#: Families of backbones named by a prefix; models/timm_backbone.py adds ``timm:``.
BACKBONE_FAMILIES: dict[str, BackboneFamily] = {}


def family_of(name: str) -> tuple[BackboneFamily, str] | None:
    """The family of ``prefix:model`` names and the model's name in it, or None."""
    for prefix, family in BACKBONE_FAMILIES.items():
        if name.startswith(prefix):
            return family, name[len(prefix):]
    return None


def takes_geometry(name: str) -> bool:
    """True when the backbone is built with the image size and patch size (the ViTs, and the
    families, whose models decide themselves)."""
    return name in GEOMETRY_BACKBONES or family_of(name) is not None


def check_backbone_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a registered backbone or a known family member."""
    found = family_of(name)
    if found is not None:
        family, model = found
        if not model:
            raise ConfigError(f"backbone '{name}' names no model: write {family.prefix}<name>, "
                              f"e.g. {family.example}")
        family.check(model)
        return
    if name not in BACKBONES and name not in GEOMETRY_BACKBONES:
        error = unknown_name("backbone", name, list_backbones())
        families = "; ".join(f.description for f in BACKBONE_FAMILIES.values())
        raise ConfigError(f"{error}" + (f"; or {families}" if families else ""))


def build_backbone(name: str, in_channels: int = 3, image_size: int | None = None,
                   patch_size: int | None = None) -> Backbone:
    """Build a randomly initialised backbone by name (see :func:`list_backbones` and the
    families, e.g. ``timm:resnet50``).

    ``image_size`` and ``patch_size`` matter only to backbones that need the image geometry (ViTs);
    convolutional backbones accept any size.
    """
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    found = family_of(name)
    if found is not None:
        check_backbone_name(name)
        family, model = found
        return family.build(model, in_channels, image_size, patch_size)
    if name in GEOMETRY_BACKBONES:
        if image_size is None:
            raise ConfigError(f"backbone '{name}' needs the image size (image_size)")
        return GEOMETRY_BACKBONES[name](in_channels, image_size, patch_size)
    check_backbone_name(name)
    if patch_size is not None:
        raise ConfigError(f"patch_size is a setting of ViT backbones, not of '{name}'")
    return BACKBONES[name](in_channels)
