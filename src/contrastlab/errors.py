"""User-facing error types.

Every error a user can cause (a bad file, a bad value) is raised as one of these, with a message
that names the file, key or value and says what to do. The command line prints the message, not a
traceback.
"""

import difflib
from collections.abc import Iterable


class ContrastlabError(Exception):
    """Base class of every error caused by user input."""


class DataError(ContrastlabError, ValueError):
    """A dataset cannot be read: unreadable file, empty folder, inconsistent images."""


class ConfigError(ContrastlabError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class CheckpointError(ContrastlabError, ValueError):
    """A checkpoint or run directory is missing, incomplete or incompatible."""


class WriteError(ContrastlabError):
    """An output file could not be written (full disk, no permission, ...).

    Raised by :mod:`contrastlab.atomic`; the message names the file and the cause, and the
    previous file at that path (if any) is intact. ``path`` is the file, ``cause`` the short
    reason (e.g. ``"No space left on device"``) and ``errno`` the error number when known.
    """

    def __init__(self, message: str, path: str = "", cause: str = "",
                 errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.cause = cause
        self.errno = errno


def did_you_mean(name: str, allowed: Iterable[str], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest allowed name, or an empty string."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=cutoff)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, allowed: Iterable[str]) -> ConfigError:
    """The error for a name that is not registered, with a suggestion and the valid names."""
    allowed = sorted(allowed)
    return ConfigError(
        f"unknown {kind} '{name}'.{did_you_mean(name, allowed)} Available: {', '.join(allowed)}"
    )
