"""Self-supervised methods: one file per method, each a subclass of :class:`Method`.

Every module in this package is imported here and every :class:`Method` subclass that sets its
own ``name`` is registered under that name (the ``--method`` value), so adding a method is adding
one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from contrastlab.errors import ConfigError, unknown_name
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.settings import MethodSettings
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
    owners: dict[type, str] = {}
    for name, method in found.items():  # each method declares its own settings class
        if "Settings" not in vars(method) or method.Settings in owners:
            raise RuntimeError(f"method '{name}' must declare its own Settings dataclass")
        owners[method.Settings] = name
        method.Settings.name = name
    return found


METHODS: dict[str, type[Method]] = _discover()


def list_methods() -> list[str]:
    """Names accepted by ``--method``."""
    return sorted(METHODS)


#: methods of other commands than ``contrastlab train`` (which trains image encoders), so that
#: ``--method simcse`` says where SimCSE is instead of only listing the image methods
OTHER_COMMANDS: dict[str, str] = {
    "simcse": "SimCSE trains sentence encoders: `contrastlab train-text --data SENTENCES` "
              "(unsupervised) or `contrastlab train-text --supervised --data PAIRS` (docs/text.md)",
    "cosent": "CoSENT trains sentence encoders on scored pairs: `contrastlab train-text "
              "--supervised --supervised-loss cosent --data PAIRS` (docs/text.md)",
}


def method_class(name: str) -> type[Method]:
    """The method registered as ``name`` (ConfigError with the valid names otherwise)."""
    if name in OTHER_COMMANDS and name not in METHODS:
        raise ConfigError(f"'{name}' is not a method of `contrastlab train` (image encoders): "
                          f"{OTHER_COMMANDS[name]}. CLIP and SigLIP on image-caption pairs: "
                          "`contrastlab train-pairs`.")
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    return METHODS[name]


def build_method(
    name: str,
    backbone_name: str,
    in_channels: int,
    backbone_options: dict[str, Any] | None = None,
    settings: MethodSettings | None = None,
    **overrides: Any,
) -> Method:
    """Build a method around a freshly initialised backbone.

    ``backbone_options`` go to :func:`build_backbone` (e.g. ``image_size``/``patch_size`` for a
    ViT); ``settings`` (the method's :attr:`Method.Settings`) and ``overrides`` (e.g.
    ``temperature=0.2``) are the method's hyper-parameters.
    """
    method = method_class(name)
    backbone = build_backbone(backbone_name, in_channels, **(backbone_options or {}))
    return method(backbone, settings, **overrides)


__all__ = ["METHODS", "Method", "MethodSettings", "SimCLR", "StepOutput", "build_method",
           "list_methods", "method_class"]
