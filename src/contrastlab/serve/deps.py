"""Lazy imports of the optional serving libraries, with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from contrastlab.errors import ConfigError

#: import name -> pip distribution name, for the error message.
_DISTRIBUTIONS = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "python_multipart": "python-multipart",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "faiss": "faiss-cpu",
    "safetensors": "safetensors",
    "httpx": "httpx",
    "pyarrow": "pyarrow",
}


def require(module: str, purpose: str, extra: str | None = "serve") -> ModuleType:
    """Import ``module`` or raise ConfigError naming the package (and extra) to install.

    Args:
        module: the import name, e.g. ``"onnxruntime"`` or ``"safetensors.torch"``.
        purpose: what it is needed for, e.g. ``"--format onnx"``.
        extra: the contrastlab extra that installs it (None when no extra does).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        distribution = _DISTRIBUTIONS.get(top, top)
        how = (f"pip install 'contrastlab[{extra}]' (or pip install {distribution})"
               if extra else f"pip install {distribution}")
        raise ConfigError(
            f"{purpose} needs the Python package '{distribution}', which is not installed "
            f"({error}); install it with: {how}"
        ) from error
