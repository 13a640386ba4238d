"""Reading a folder of image files on disk (class folders, train/test trees or a flat folder).

The folder's meaning (labels, official split, unlabeled) follows :mod:`contrastlab.data.layout`;
decoding and colour conversions follow :mod:`contrastlab.data.decode`. Hidden files and folders
(names starting with '.') and files without an image extension are ignored. Symbolic links to
folders are followed (each real folder is read once).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from contrastlab.data.assemble import all_paths, build_datasets
from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.decode import decode_images, is_image_name
from contrastlab.data.layout import is_ignored_name, plan_layout
from contrastlab.data.split import make_dataset
from contrastlab.errors import DataError


def list_image_tree(root: Path) -> tuple[list[str], list[str]]:
    """List the image files and folders below ``root`` as relative POSIX paths (sorted)."""
    files: list[str] = []
    dirs: list[str] = []
    seen: set[str] = set()
    for current, subdirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(d for d in subdirs if not is_ignored_name(d))
        relative = Path(current).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        if prefix:
            dirs.append(prefix[:-1])
        for name in names:
            if is_ignored_name(name) or not is_image_name(name):
                continue
            files.append(prefix + name)
    return sorted(files), sorted(dirs)


def read_image_folder(
    root: Path,
    *,
    test_fraction: float,
    split_seed: int,
    skip_bad_files: bool,
    image_size: int | None,
) -> DatasetSplits:
    """Read a folder tree of images into :class:`DatasetSplits` (see the module docstring)."""
    files, dirs = list_image_tree(root)

    def describe(relative: str) -> str:
        return str(root / relative) if relative else str(root)

    plan = plan_layout(files, dirs, describe)
    paths = all_paths(plan)
    ids = [str(root / path) for path in paths]
    decoded = decode_images(
        ids,
        [root / path for path in paths],
        image_size=image_size,
        skip_bad_files=skip_bad_files,
        description=f"decoding the images of {root}",
    )
    return build_datasets(
        plan,
        decoded,
        ids,
        root.name or str(root),
        test_fraction=test_fraction,
        split_seed=split_seed,
    )


def read_evaluation_images(root: Path, *, skip_bad_files: bool, image_size: int | None
                           ) -> ImageDataset:
    """The labelled images a model is scored on without training on any (zero-shot): the
    official test part of a ``train/`` + ``test/`` tree (only it is decoded), else every image
    of the class folders (no split drawn).

    Raises:
        DataError: a tree without class folders, or what decoding raises.
    """
    files, dirs = list_image_tree(root)
    plan = plan_layout(files, dirs, lambda relative: str(root / relative) if relative
                       else str(root))
    part = plan.test if plan.test is not None else plan.train
    if plan.classes is None or part.labels is None:
        raise DataError(f"'{root}' has no class folders: give DATA/<class>/*.jpg (the folder "
                        "names are the classes)")
    ids = [str(root / path) for path in part.paths]
    decoded = decode_images(ids, [root / path for path in part.paths], image_size=image_size,
                            skip_bad_files=skip_bad_files,
                            description=f"decoding the images of {root}")
    labels = np.asarray(part.labels, dtype=np.int64)[decoded.kept]
    name = (root.name or str(root)) + (" (test)" if plan.test is not None else "")
    return make_dataset(decoded.images, labels, plan.classes, [ids[i] for i in decoded.kept],
                        name)
