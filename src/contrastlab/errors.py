"""User-facing error types.

Every error a user can cause (a bad file, a bad value) is raised as one of these, with a message
that names the file, key or value and says what to do. The command line prints the message, not a
traceback.
"""


class ContrastlabError(Exception):
    """Base class of every error caused by user input."""


class DataError(ContrastlabError, ValueError):
    """A dataset cannot be read: unreadable file, empty folder, inconsistent images."""


class ConfigError(ContrastlabError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class CheckpointError(ContrastlabError, ValueError):
    """A checkpoint or run directory is missing, incomplete or incompatible."""
