"""Any model of the timm library as the backbone: ``--backbone timm:<name>``.

``timm:resnet50``, ``timm:vit_small_patch16_224``, ``timm:convnext_tiny``... are built with
``timm.create_model(name, pretrained=False, num_classes=0, in_chans=C)`` (Wightman, "PyTorch
Image Models", https://github.com/huggingface/pytorch-image-models): randomly initialised (nothing
is downloaded; ``--weights FILE`` loads a local state dict), classifier removed, so the model
returns its pooled features. ``output_dim`` is their width: ``head_hidden_size`` where timm has
one (models with a pre-logits layer, e.g. MobileNetV3), else ``num_features``.

Geometry: models that take ``img_size`` (ViT, DeiT, Swin, ...) are built for the run's image size
and, with ``--patch-size``, for that patch size, like the ViTs of models/vit.py; models that do not
(ConvNets) are built without it and accept any size. Which one a model is, timm decides: it is
tried with ``img_size`` first.

timm is an optional dependency (``pip install timm`` or ``pip install 'contrastlab[timm]'``),
imported only when a ``timm:`` backbone is named.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from types import ModuleType

import torch
from torch import Tensor, nn

from contrastlab.errors import ConfigError
from contrastlab.models.backbones import BACKBONE_FAMILIES, Backbone, BackboneFamily

TIMM_PREFIX = "timm:"


def import_timm() -> ModuleType:
    """The timm module, or ConfigError saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ConfigError(
            "timm: backbones need the timm library: pip install timm (or pip install "
            "'contrastlab[timm]')"
        ) from None


@functools.cache
def timm_model_names() -> tuple[str, ...]:
    """Every architecture timm can build (``timm.list_models()``)."""
    return tuple(import_timm().list_models())


def check_timm_model(model: str) -> None:
    """Raise ConfigError, with the closest names, unless timm knows ``model`` (a pretrained tag
    such as ``resnet50.a1_in1k`` is accepted: it selects the architecture's configuration)."""
    timm = import_timm()
    if timm.is_model(model):
        return
    close = difflib.get_close_matches(model, timm_model_names(), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(TIMM_PREFIX + name for name in close)}." if close else ""
    raise ConfigError(
        f"unknown timm model '{model}' (backbone '{TIMM_PREFIX}{model}').{hint} List names with "
        "python -c \"import timm; print(timm.list_models('*resnet*'))\""
    )


def _unexpected(error: TypeError, keyword: str) -> bool:
    return f"'{keyword}'" in str(error) and "unexpected keyword" in str(error)


class TimmBackbone(Backbone):
    """A timm model without its classifier: images (N, C, H, W) -> pooled features (N, D).

    Args:
        model_name: a timm model name (``resnet50``, ``vit_small_patch16_224``).
        in_channels: 1 or 3.
        image_size: the run's image size, given to models that take ``img_size``.
        patch_size: given to models that take ``patch_size`` (ViTs); refused by the others.

    ``image_size`` is kept as :attr:`fixed_image_size` when the model was built for it (it then
    takes images of that size only), else None.
    """

    def __init__(self, model_name: str, in_channels: int = 3, image_size: int | None = None,
                 patch_size: int | None = None) -> None:
        super().__init__()
        check_timm_model(model_name)
        timm = import_timm()
        options = {"pretrained": False, "num_classes": 0, "in_chans": in_channels}
        geometry = {}
        if image_size is not None:
            geometry["img_size"] = image_size
        if patch_size is not None:
            geometry["patch_size"] = patch_size
        where = f"timm model '{model_name}'"
        try:
            try:
                model = timm.create_model(model_name, **options, **geometry)
                self.fixed_image_size = image_size
            except TypeError as error:
                if not (_unexpected(error, "img_size") or _unexpected(error, "patch_size")):
                    raise
                if patch_size is not None:
                    raise ConfigError(
                        f"{where} does not take a patch size; remove --patch-size (it is a "
                        "setting of ViT-like models)"
                    ) from None
                model = timm.create_model(model_name, **options)  # any input size (ConvNets)
                self.fixed_image_size = None
        except ConfigError:
            raise
        except (TypeError, ValueError, AssertionError, RuntimeError) as error:
            size = f" for {image_size}x{image_size} images" if image_size is not None else ""
            raise ConfigError(
                f"timm could not build {where}{size} with {in_channels} channel(s): {error}. For "
                "ViT-like models try another --patch-size or --image-size"
            ) from error
        self.model_name = model_name
        self.model: nn.Module = model
        self.output_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if self.fixed_image_size is not None:
            self._check_geometry(in_channels)

    @torch.no_grad()
    def _check_geometry(self, in_channels: int) -> None:
        """A model built for one image size: one image of that size must go through (a patch
        larger than the image, or a Swin window that does not divide the grid, fail here)."""
        size = self.fixed_image_size
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(torch.zeros(1, in_channels, size, size))
        except Exception as error:  # noqa: BLE001 - any failure means this geometry cannot work
            raise ConfigError(
                f"timm model '{self.model_name}' built for {size}x{size} images cannot encode "
                f"them ({type(error).__name__}: {error}); try another --patch-size or "
                "--image-size"
            ) from error
        finally:
            self.model.train(was_training)
        if out.shape[-1] != self.output_dim:
            self.output_dim = int(out.shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _build(model: str, in_channels: int, image_size: int | None,
           patch_size: int | None) -> TimmBackbone:
    return TimmBackbone(model, in_channels, image_size, patch_size)


BACKBONE_FAMILIES[TIMM_PREFIX] = BackboneFamily(
    prefix=TIMM_PREFIX, build=_build, check=check_timm_model,
    description="timm:<name> for any timm model (pip install timm), e.g. timm:resnet50",
    example="timm:resnet50")

__all__ = ["TIMM_PREFIX", "TimmBackbone", "check_timm_model", "import_timm", "timm_model_names"]
