"""Settings for the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from contrastlab.data.cache_dir import CACHE_ENV


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test (and every CLI process a test starts) caches into a folder of this session,
    never the user's ~/.cache/contrastlab."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("contrastlab-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before
