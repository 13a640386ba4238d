"""Reading an image-folder tree straight from a ``.tar``, ``.tar.gz`` or ``.tgz`` archive.

Nothing is extracted to disk: the archive is read once, front to back, keeping the bytes of every
regular member with an image extension in memory; then the images are decoded in a thread pool
like a folder's (:mod:`contrastlab.data.decode`). The tree follows the same rules as a folder
(:mod:`contrastlab.data.layout`), after top-level folders that merely wrap it
(``cifar10/train/...``) are stripped. Hidden members, ``__MACOSX`` folders, links and other
non-regular members are ignored. Images are named ``"<archive>::<member path>"`` in ids and
messages.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

from contrastlab.data.assemble import all_paths, build_datasets
from contrastlab.data.dataset import DatasetSplits
from contrastlab.data.decode import decode_images, is_image_name
from contrastlab.data.layout import is_ignored_name, plan_layout, unwrap_single_folder
from contrastlab.errors import DataError

#: Archive suffixes this reader accepts (lower case).
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")


def is_archive_name(path: Path) -> bool:
    """True when ``path`` ends with one of :data:`ARCHIVE_SUFFIXES` (ignoring case)."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _clean_member_name(name: str) -> list[str] | None:
    """Split a member name into path parts; None for hidden, ignored or unsafe names."""
    parts = [part for part in PurePosixPath(name).parts if part not in ("", ".", "/")]
    if not parts or any(part == ".." or is_ignored_name(part) for part in parts):
        return None
    return parts


def read_members(archive: Path) -> tuple[dict[str, bytes], list[str]]:
    """Read an archive's image members and folder names in one pass.

    Returns:
        ``(images, dirs)``: member path (normalised, without a leading './') -> bytes for every
        regular file with an image extension, and every folder path seen (explicit or implied).

    Raises:
        DataError: when the file is not a readable tar archive.
    """
    images: dict[str, bytes] = {}
    dirs: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                parts = _clean_member_name(member.name)
                if parts is None:
                    continue
                for depth in range(1, len(parts)):
                    dirs.add("/".join(parts[:depth]))
                path = "/".join(parts)
                if member.isdir():
                    dirs.add(path)
                    continue
                if not member.isreg() or not is_image_name(parts[-1]):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                images[path] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"cannot read archive {archive}: {exc.__class__.__name__}: {exc}. Check that it is a "
            "complete .tar, .tar.gz or .tgz file (e.g. with 'tar tzf'), or extract it and pass "
            "the folder"
        ) from exc
    return images, sorted(dirs)


def read_archive(
    archive: Path,
    *,
    test_fraction: float,
    split_seed: int,
    skip_bad_files: bool,
    image_size: int | None,
) -> DatasetSplits:
    """Read an archive of an image-folder tree into :class:`DatasetSplits`."""
    members, member_dirs = read_members(archive)
    prefix, files, dirs = unwrap_single_folder(sorted(members), member_dirs)
    base = f"{prefix}/" if prefix else ""

    def describe(relative: str) -> str:
        inner = (base + relative).rstrip("/")
        return f"{archive}::{inner}" if inner else str(archive)

    plan = plan_layout(files, dirs, describe)
    paths = all_paths(plan)
    ids = [f"{archive}::{base}{path}" for path in paths]
    sources = [members.pop(base + path) for path in paths]
    members.clear()
    decoded = decode_images(ids, sources, image_size=image_size, skip_bad_files=skip_bad_files,
                            description=f"decoding the images of {archive}")
    del sources
    name = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return build_datasets(
        plan,
        decoded,
        ids,
        name or archive.name,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
