"""Checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)``: a crafted file cannot run code. Writing goes to a temporary file
in the same folder, is flushed and fsynced, then renamed over the old one, so a crash mid-write
leaves the previous checkpoint intact.

Testing hook (not a user setting): when the environment variable
``CONTRASTLAB_TEST_SLOW_CHECKPOINT`` holds a number of seconds, :func:`save_atomic` sleeps that long
after the temporary file is written and synced and before the rename, so that a test can kill the
process in the middle of a checkpoint write (tests/reliability/test_kill_resume.py).
"""

from __future__ import annotations

import os
import pickletools
import random
import re
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlab.atomic import save_torch_atomic
from contrastlab.errors import CheckpointError

#: the ``format`` field of every checkpoint contrastlab writes
CHECKPOINT_FORMAT = "contrastlab-checkpoint-v1"


def save_atomic(state: dict[str, Any], path: str | Path, advice: str | None = None) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename, through
    :func:`contrastlab.atomic.save_torch_atomic`): the previous file survives any failure and no
    temporary file is left.

    Raises:
        WriteError: the file system refused the write (full disk, permissions), naming the file
            and the cause; ``advice`` says what to do (default: from the cause).
    """
    save_torch_atomic(state, path, "checkpoint", advice=advice,
                      before_replace=lambda _: _test_pause())


#: the testing hook's environment variable (see the module docstring)
SLOW_CHECKPOINT_VARIABLE = "CONTRASTLAB_TEST_SLOW_CHECKPOINT"


def _test_pause() -> None:
    """Sleep between writing the temporary file and renaming it, when the testing hook asks."""
    seconds = os.environ.get(SLOW_CHECKPOINT_VARIABLE)
    if seconds:
        time.sleep(float(seconds))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.pt.XXXX.tmp``) that a writer killed between writing
    and renaming left in ``folder``; return them. Checkpoints themselves are never touched."""
    stale = sorted(Path(folder).glob(".*.pt.*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():  # torch's note on a bare pickle's protocol: we explain
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file cannot be trusted/read
        raise CheckpointError(_load_failure(path, error)) from error


def load_run_of_kind(run: str | Path, kind: str, command: str, wrong_kind: str
                     ) -> dict[str, Any]:
    """The checkpoint of the run in folder ``run``, which ``contrastlab {command}`` wrote with
    ``kind``; ``wrong_kind`` is the message for another kind of run's checkpoint.

    Raises:
        CheckpointError: no checkpoint, an unreadable one, or another kind's.
    """
    from contrastlab.runs.directory import RunDirectory

    path = RunDirectory(run).checkpoint_path
    if not path.is_file():
        raise CheckpointError(f"'{run}' holds no run (no {path}): give the --out folder of "
                              f"`contrastlab {command}`")
    state = load_checkpoint(path)
    if state.get("kind") != kind:
        raise CheckpointError(f"'{run}' {wrong_kind}")
    return state


def _load_failure(path: Path, error: Exception) -> str:
    """One short message for a checkpoint that does not load. torch's own text is long and
    suggests ``weights_only=False``, which would let a crafted file run code: not repeated."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    # name the object outside torch a crafted file asks for (torch's reader may stop earlier, at
    # a torch object it does not allow or at a newer pickle protocol's framing)
    forbidden = first_global(path) or (found.group(1) if found else None)
    if forbidden:
        kind = "" if zipfile.is_zipfile(path) else " (a bare pickle, not a torch checkpoint)"
        return (f"refused to load checkpoint '{path}'{kind}: it asks for the Python object "
                f"'{forbidden}', and a checkpoint holds only tensors and plain data (a "
                "crafted file could run code this way; refused for safety). Load only checkpoints "
                "written by contrastlab")
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(error).__name__
    if "Weights only load failed" in first:
        first = "a safe (weights-only) load cannot read it"
    if path.stat().st_size == 0:
        first = "the file is empty"
    return (f"cannot load checkpoint '{path}': {first}. It may be truncated or not a contrastlab "
            "checkpoint (only tensors and plain data are read, for safety)")


#: modules whose objects a weights-only load may rebuild (tensors, ordered dicts, ...)
SAFE_MODULES = ("torch.", "collections.", "builtins.", "_codecs.")


def first_global(path: Path) -> str | None:
    """The first Python object (``module.name``) the pickle in ``path`` would import, read from
    its opcodes without running them; None when there is none or the pickle cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return None
                data = archive.read(names[0])
        else:
            data = path.read_bytes()
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            name = None
            if opcode.name == "GLOBAL":
                name = str(argument).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            elif isinstance(argument, str):
                strings.append(argument)
            if name is not None and not name.startswith(SAFE_MODULES):
                return name
    except Exception:  # noqa: BLE001 - a truncated or foreign file: no name to give
        return None
    return None


def capture_rng_state() -> dict[str, Any]:
    """Every global random state as plain data (tensors, ints, tuples)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
