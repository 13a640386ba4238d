"""The serving libraries are optional: named when missing (that they are imported lazily is
checked by tests/serve/test_cli_serve.py in a fresh interpreter)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from contrastlab.errors import ConfigError
from contrastlab.serve.deps import require


@pytest.mark.parametrize("module,distribution", [("faiss", "faiss-cpu"),
                                                 ("python_multipart", "python-multipart"),
                                                 ("onnxruntime", "onnxruntime")])
def test_missing_library_names_the_package_and_the_extra(monkeypatch, module,
                                                         distribution) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ConfigError, match=rf"'{distribution}'.*pip install 'contrastlab\[serve\]'"):
        require(module, "this test")


def test_index_building_without_faiss_is_a_config_error(monkeypatch) -> None:
    from contrastlab.serve.index import build_index

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match="faiss-cpu"):
        build_index(np.ones((2, 2), dtype=np.float32))
