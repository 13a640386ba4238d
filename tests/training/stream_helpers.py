"""What the streaming tests share: small run settings and one thread per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contrastlab.config import build_config
from tests import threads


def stream_config(settings: dict[str, Any], data: str, out: Path, **overrides: Any) -> Any:
    """A run's configuration: ``settings``, then the data, the run folder and ``overrides``."""
    return build_config(None, {**settings, "data": data, "out": str(out), **overrides})


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one thread (as the killed subprocesses do), then restore the thread count."""
    with threads.one_thread():
        yield
