"""Atomic file writes: the previous file survives any failure, and no temporary file is left.

Every writer of contrastlab output (embeddings, indexes, exported artefacts, checkpoints) goes
through :func:`write_atomic` (or :func:`write_atomic_group` for files that belong together):

1. the folder is created if needed;
2. ``write(tmp)`` writes the content to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same
   folder (so the final rename never crosses file systems);
3. the temporary file is flushed to disk (``fsync``) and renamed over ``path``
   (:func:`os.replace`, atomic on POSIX and Windows), then the folder is synced;
4. on *any* failure, including Ctrl-C, the temporary file is removed and ``path`` is left as it
   was. Failures that come from the file system are raised as
   :class:`~contrastlab.errors.WriteError`, whose one-line message names the file, the cause
   (``No space left on device``, ``Permission denied``, ...) and what to do.

Libraries report a full disk in their own ways, and all of these are recognised: ``OSError``
with an errno (Python's own file objects, ONNX), numpy's ``OSError: 1000000 requested and 262112
written`` (no errno), PyTorch's ``RuntimeError: [enforce fail at inline_container.cc:...] .
unexpected pos ...`` or ``... file write failed``, FAISS's ``RuntimeError: Error in
faiss::write_index ... write error ... (No space left on device)`` and safetensors' ``I/O error:
... (os error 28)``. When a message names no cause, the folder's free space is checked: a write
that failed on a (nearly) full file system is reported as ``No space left on device``.
Exceptions that are not write failures (a ``TypeError`` from a bug, say) are re-raised
unchanged, after the temporary file is removed.

Example::

    from contrastlab.atomic import save_torch_atomic, write_atomic

    write_atomic(out, lambda tmp: tmp.write_text(text), "report")
    save_torch_atomic(state, run / "checkpoints" / "last.pt", "checkpoint",
                      advice="free disk space, then continue with --resume")

This module depends only on :mod:`contrastlab.errors` (PyTorch is imported by
:func:`save_torch_atomic` only).
"""

from __future__ import annotations

import errno as errno_codes
import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contrastlab.errors import WriteError

#: Writes the content to the temporary file it is given.
Writer = Callable[[Path], None]

#: Free space (bytes) under which a failed write is blamed on a full file system.
FULL_DISK_BYTES = 64 * 1024

_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]|os error (\d+)|errno[ =:]+(\d+)", re.IGNORECASE)
_WRITE_FAILURE_TEXT = re.compile(
    r"file write failed|unexpected pos|write error|requested and \d+ written|fwrite|"
    r"failed writing|I/O error|IoError|could not write|cannot write", re.IGNORECASE)
_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")
_KNOWN_CAUSES = (errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EFBIG, errno_codes.EROFS,
                 errno_codes.EACCES, errno_codes.EPERM, errno_codes.EIO)
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, KeyError,
                       IndexError, ImportError)


def temporary_pattern(name: str) -> str:
    """The glob of the temporary files of target file ``name`` (``.NAME.*.tmp``)."""
    return f".{name}.*.tmp"


def _disk_nearly_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES or stats.f_favail == 0


def write_failure_cause(error: BaseException, folder: str | Path) -> tuple[str, int | None] | None:
    """``(cause, errno)`` if ``error`` is a failure to write into ``folder``, else None.

    ``cause`` is a short text such as ``"No space left on device"``; ``errno`` is None when it
    is not known. See the module doc for the forms recognised.
    """
    if not isinstance(error, Exception) or isinstance(error, _PROGRAMMING_ERRORS):
        return None
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno), error.errno
    text = str(error)
    found = _ERRNO_IN_TEXT.search(text)
    if found:
        number = int(next(group for group in found.groups() if group))
        return os.strerror(number), number
    for number in _KNOWN_CAUSES:
        if os.strerror(number).lower() in text.lower():
            return os.strerror(number), number
    if _disk_nearly_full(Path(folder)):
        return os.strerror(errno_codes.ENOSPC), errno_codes.ENOSPC
    if isinstance(error, OSError) or _WRITE_FAILURE_TEXT.search(text):
        first = _ENFORCE_PREFIX.sub("", text.strip().splitlines()[0] if text.strip() else "")
        return (first[:200] or type(error).__name__), None
    return None


def _advice(number: int | None) -> str:
    if number in (errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EFBIG):
        return "Free disk space or write to another folder, then run the command again"
    if number in (errno_codes.EACCES, errno_codes.EPERM, errno_codes.EROFS):
        return ("Fix the folder's permissions or write to another folder, then run the command "
                "again")
    return "Check the disk and the folder, or write to another folder, then run the command again"


def _write_error(error: BaseException, path: Path, what: str, existed: bool,
                 advice: str | None) -> WriteError | None:
    described = write_failure_cause(error, path.parent)
    if described is None:
        return None
    cause, number = described
    state = "the previous file there is intact" if existed else "no file was left there"
    return WriteError(f"could not write {what} '{path}' ({cause}); {state}. "
                      f"{advice or _advice(number)}", str(path), cause, number)


def _make_folder(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        cause = os.strerror(error.errno) if error.errno else str(error)
        blocking = next((folder for folder in reversed(path.parents)
                         if folder.exists() and not folder.is_dir()), None)
        if blocking is not None:
            cause = f"'{blocking}' is a file, not a folder"
        raise WriteError(f"could not create the folder '{path.parent}' for {what} '{path}' "
                         f"({cause}); choose another output path", str(path), cause,
                         error.errno) from error


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    try:  # makes the rename itself durable; not possible everywhere (e.g. Windows)
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomic_group(files: Sequence[tuple[str | Path, Writer]], what: str, *,
                       advice: str | None = None,
                       before_replace: Callable[[Path], None] | None = None) -> list[Path]:
    """Write several files that belong together (e.g. an array and its ids), atomically each.

    Every file is written to its temporary file and synced first; only when all of them are
    complete are they renamed over their targets, so a failure while writing leaves every
    previous file intact.

    Args:
        files: ``(path, write)`` pairs; ``write(tmp)`` writes the content to ``tmp``.
        what: what the files are, for messages (``"embeddings"``, ``"index"``).
        advice: what the user should do on failure (default: from the cause, e.g. "Free disk
            space or write to another folder, then run the command again").
        before_replace: called with each complete temporary file just before it is renamed
            (a testing hook: a test can kill the process there).

    Returns:
        The paths written.

    Raises:
        WriteError: a file-system failure (see the module doc); nothing was replaced.
    """
    targets = [Path(path) for path, _ in files]
    for target in targets:
        _make_folder(target, what)
    existed = [target.exists() for target in targets]
    temporaries: list[Path] = []
    current = targets[0]
    try:
        for target, (_, write) in zip(targets, files, strict=True):
            current = target
            descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                                dir=target.parent)
            os.close(descriptor)
            temporaries.append(Path(name))
            write(temporaries[-1])
            _fsync_file(temporaries[-1])
        for target, temporary in zip(targets, temporaries, strict=True):
            current = target
            if before_replace is not None:
                before_replace(temporary)
            os.replace(temporary, target)
    except BaseException as error:
        index = targets.index(current)
        wrapped = _write_error(error, current, what, existed[index], advice)
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        if wrapped is None:
            raise
        raise wrapped from error
    for folder in {target.parent for target in targets}:
        _fsync_folder(folder)
    return targets


def write_atomic(path: str | Path, write: Writer, what: str, *, advice: str | None = None,
                 before_replace: Callable[[Path], None] | None = None) -> Path:
    """Write ``path`` atomically with ``write(tmp)`` (see the module doc and
    :func:`write_atomic_group` for the arguments); returns ``path``."""
    return write_atomic_group([(path, write)], what, advice=advice,
                              before_replace=before_replace)[0]


def write_bytes_atomic(path: str | Path, data: bytes, what: str, **options: Any) -> Path:
    """:func:`write_atomic` of ``data``."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), what, **options)


def write_text_atomic(path: str | Path, text: str, what: str, **options: Any) -> Path:
    """:func:`write_atomic` of ``text`` (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what,
                        **options)


def save_torch_atomic(obj: Any, path: str | Path, what: str = "checkpoint", *,
                      in_memory: bool = False, **options: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`write_atomic` for ``options``).

    ``in_memory=True`` serialises into memory first and writes the bytes with Python's own file
    object: use it for objects whose native writer cannot report a failure (``torch.jit.save``
    aborts the whole process when the disk fills up under it); it needs the file's size in
    memory.
    """
    import torch

    def write(tmp: Path) -> None:
        if in_memory:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            tmp.write_bytes(buffer.getvalue())
            return
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return write_atomic(path, write, what, **options)


__all__ = [
    "FULL_DISK_BYTES",
    "Writer",
    "save_torch_atomic",
    "temporary_pattern",
    "write_atomic",
    "write_atomic_group",
    "write_bytes_atomic",
    "write_failure_cause",
    "write_text_atomic",
]
