"""contrastlab: contrastive and self-supervised representation learning.

Turns unlabeled images into a trained encoder and measures how good it is::

    import contrastlab

    result = contrastlab.train(data="digits", method="simclr", epochs=5, out="runs/demo")
    encoder = contrastlab.load("runs/demo")

``train`` and ``load`` (and ``TrainConfig``, ``build_config``) are imported on first use, so
``import contrastlab`` stays light.
"""

from typing import Any

__version__ = "0.1.0"

from contrastlab.errors import CheckpointError, ConfigError, ContrastlabError, DataError

_LAZY = {
    "train": ("contrastlab.api", "train"),
    "load": ("contrastlab.api", "load"),
    "TrainConfig": ("contrastlab.config", "TrainConfig"),
    "build_config": ("contrastlab.config", "build_config"),
}

__all__ = ["CheckpointError", "ConfigError", "ContrastlabError", "DataError", "TrainConfig",
           "__version__", "build_config", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'contrastlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
