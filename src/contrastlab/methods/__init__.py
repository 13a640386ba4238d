"""Self-supervised methods: one file per method, each a subclass of :class:`Method`.

Every module in this package is imported here and every :class:`Method` subclass that sets its
own ``name`` is registered under that name (the ``--method`` value), so adding a method is adding
one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from contrastlab.errors import unknown_name
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.simclr import SimCLR
from contrastlab.models import build_backbone


def _discover() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_") or module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Method) and value is not Method
                    and "name" in vars(value) and value.__module__ == module.__name__):
                if value.name in found and found[value.name] is not value:
                    raise RuntimeError(f"two methods are named '{value.name}'")
                found[value.name] = value
    return found


METHODS: dict[str, type[Method]] = _discover()


def list_methods() -> list[str]:
    """Names accepted by ``--method``."""
    return sorted(METHODS)


def build_method(
    name: str,
    backbone_name: str,
    in_channels: int,
    backbone_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Method:
    """Build a method around a freshly initialised backbone.

    ``backbone_options`` go to :func:`build_backbone` (e.g. ``image_size``/``patch_size`` for a
    ViT); ``kwargs`` are the method's hyper-parameters (e.g. ``temperature``, ``projection_dim``).
    """
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    backbone = build_backbone(backbone_name, in_channels, **(backbone_options or {}))
    return METHODS[name](backbone, **kwargs)


__all__ = ["METHODS", "Method", "SimCLR", "StepOutput", "build_method", "list_methods"]
