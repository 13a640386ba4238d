"""Where contrastlab keeps what it can compute again: decoded datasets and shard catalogs.

The folder is ``$CONTRASTLAB_CACHE_DIR`` when that is set, else ``$XDG_CACHE_HOME/contrastlab``,
else ``~/.cache/contrastlab``. Setting ``CONTRASTLAB_CACHE_DIR`` to ``off`` (or ``none``, ``0``,
or an empty value) turns every cache off: each command then reads and decodes its data again.
Deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable naming the cache folder (or ``off``).
CACHE_ENV = "CONTRASTLAB_CACHE_DIR"
_OFF = frozenset({"", "off", "none", "0", "false", "no"})


def cache_root() -> Path | None:
    """The cache folder, or None when caching is off (see the module doc)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        if value.strip().lower() in _OFF:
            return None
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(base).expanduser() / "contrastlab"


__all__ = ["CACHE_ENV", "cache_root"]
