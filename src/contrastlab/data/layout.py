"""How a tree of image files (a folder on disk or inside an archive) maps to labels and splits.

The readers list their image files and folders as relative POSIX paths; :func:`plan_layout`
decides what they mean:

* ``train/`` and ``test/`` (or ``val/``; matched without regard to case) at the top: the official
  split. Both must hold class sub-folders, and every test class must also be a training class.
  Other top-level entries are ignored, and so is ``val/`` when ``test/`` exists.
* only ``train/`` at the top: its class sub-folders, without an official split.
* sub-folders at the top: one class per sub-folder (classes sorted by name, labels 0..K-1); the
  images of a class may lie in nested folders below it.
* only images at the top: unlabeled data.

Hidden entries (names starting with '.') and ``__MACOSX`` folders are dropped by the readers.
An empty tree, a class folder without images, or images lying next to class folders raise DataError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from contrastlab.errors import DataError

#: Folder names that are never part of a dataset (besides hidden ones).
IGNORED_NAMES: frozenset[str] = frozenset({"__MACOSX"})

_TEST_NAMES = ("test", "val")


def is_ignored_name(name: str) -> bool:
    """True for a hidden file or folder name, or one of :data:`IGNORED_NAMES`."""
    return name.startswith(".") or name in IGNORED_NAMES


@dataclass
class Part:
    """Images of one side (training or test) of a planned dataset.

    Attributes:
        paths: relative paths of the images, sorted by class then path.
        labels: one label per path, or None for unlabeled data.
    """

    paths: list[str]
    labels: list[int] | None


@dataclass
class Plan:
    """What a tree of images means.

    Attributes:
        classes: class names indexed by label, or None for unlabeled data.
        train: the training images (all images when there is no official split).
        test: the official test images, or None when the tree has no official split.
    """

    classes: list[str] | None
    train: Part
    test: Part | None


def _join(prefix: str, name: str) -> str:
    """Join relative POSIX paths, where an empty prefix means the root."""
    return f"{prefix}/{name}" if prefix else name


class _Tree:
    """Image files and folders below one folder, grouped by their first path component."""

    def __init__(self, files: Iterable[str], dirs: Iterable[str]) -> None:
        """Group ``files`` and ``dirs`` (relative POSIX paths) by their first component."""
        self.top_files: list[str] = []
        self.children: dict[str, tuple[list[str], list[str]]] = {}
        for path in files:
            head, sep, rest = path.partition("/")
            if sep:
                self._child(head)[0].append(rest)
            else:
                self.top_files.append(path)
        for path in dirs:
            head, sep, rest = path.partition("/")
            child = self._child(head)
            if sep and rest:
                child[1].append(rest)

    def _child(self, name: str) -> tuple[list[str], list[str]]:
        """The ``(files, dirs)`` lists of child folder ``name``, created when new."""
        if name not in self.children:
            self.children[name] = ([], [])
        return self.children[name]

    def subtree(self, name: str) -> _Tree:
        files, dirs = self.children[name]
        return _Tree(files, dirs)

    def find(self, wanted: str) -> str | None:
        """The child folder whose name equals ``wanted`` ignoring case (exact match preferred)."""
        if wanted in self.children:
            return wanted
        matches = sorted(name for name in self.children if name.lower() == wanted)
        return matches[0] if matches else None


def _class_folders(
    tree: _Tree, prefix: str, describe: Callable[[str], str]
) -> dict[str, list[str]]:
    """Map each class folder name below ``prefix`` to its image paths (relative to the root)."""
    if not tree.children:
        if tree.top_files:
            raise DataError(
                f"{describe(prefix)} holds images but no class sub-folders; put the images in one "
                "sub-folder per class"
            )
        raise DataError(
            f"{describe(prefix)} holds no images; add one sub-folder of images per class"
        )
    if tree.top_files:
        stray = _join(prefix, sorted(tree.top_files)[0])
        folder = _join(prefix, sorted(tree.children)[0])
        raise DataError(
            f"{describe(prefix)} mixes loose images (e.g. {describe(stray)}) with class folders "
            f"(e.g. {describe(folder)}); move every image into a class folder, or point at a "
            "folder holding only images for unlabeled data"
        )
    classes: dict[str, list[str]] = {}
    for name in sorted(tree.children):
        files, _ = tree.children[name]
        folder = _join(prefix, name)
        if not files:
            raise DataError(
                f"class folder {describe(folder)} holds no images; add images to it or remove it"
            )
        classes[name] = sorted(_join(folder, path) for path in files)
    return classes


def _part(classes: dict[str, list[str]], index: dict[str, int]) -> Part:
    """Flatten class folders into paths and labels, in label order."""
    paths: list[str] = []
    labels: list[int] = []
    for name in sorted(classes, key=lambda c: index[c]):
        paths.extend(classes[name])
        labels.extend([index[name]] * len(classes[name]))
    return Part(paths=paths, labels=labels)


def plan_layout(files: Iterable[str], dirs: Iterable[str], describe: Callable[[str], str]) -> Plan:
    """Decide labels, classes and split of a tree of images (see the module docstring).

    Args:
        files: relative POSIX paths of the image files (hidden and non-image files already removed).
        dirs: relative POSIX paths of folders (needed to notice empty class folders).
        describe: turns a relative folder or file path ('' is the root) into a name for messages.

    Raises:
        DataError: for an empty tree, an empty class folder, images next to class folders, or
            test classes that the training set lacks.
    """
    tree = _Tree(files, dirs)
    train_name = tree.find("train")
    test_name = next((n for n in (tree.find(t) for t in _TEST_NAMES) if n is not None), None)
    if train_name is not None and test_name is not None:
        train_classes = _class_folders(tree.subtree(train_name), train_name, describe)
        test_classes = _class_folders(tree.subtree(test_name), test_name, describe)
        extra = sorted(set(test_classes) - set(train_classes))
        if extra:
            raise DataError(
                f"the class folders of {describe(test_name)} and {describe(train_name)} disagree: "
                f"{', '.join(repr(c) for c in extra[:5])}"
                f"{' ...' if len(extra) > 5 else ''} exist only in {describe(test_name)}. Every "
                "test class needs a training folder of the same name; rename or remove them"
            )
        names = sorted(train_classes)
        index = {name: i for i, name in enumerate(names)}
        return Plan(
            classes=names, train=_part(train_classes, index), test=_part(test_classes, index)
        )
    if train_name is not None and len(tree.children) == 1 and not tree.top_files:
        train_tree = tree.subtree(train_name)
        if train_tree.children:
            classes = _class_folders(train_tree, train_name, describe)
            names = sorted(classes)
            index = {name: i for i, name in enumerate(names)}
            return Plan(classes=names, train=_part(classes, index), test=None)
    if tree.children:
        classes = _class_folders(tree, "", describe)
        names = sorted(classes)
        index = {name: i for i, name in enumerate(names)}
        return Plan(classes=names, train=_part(classes, index), test=None)
    if tree.top_files:
        return Plan(classes=None, train=Part(paths=sorted(tree.top_files), labels=None), test=None)
    raise DataError(
        f"{describe('')} holds no image files (accepted extensions: png, jpg, jpeg, bmp, gif, "
        "webp, tif, tiff); add images, one sub-folder per class"
    )


def unwrap_single_folder(files: list[str], dirs: list[str]) -> tuple[str, list[str], list[str]]:
    """Strip top-level folders that only wrap the tree (an archive's ``name/`` folder).

    While the tree has no images at the top and exactly one folder, that folder becomes the root.
    ``train``/``test``/``val`` folders are never stripped.

    Returns:
        ``(prefix, files, dirs)``: the stripped prefix ('' when none) and the paths below it.
    """
    prefix = ""
    while True:
        tops = {path.partition("/")[0] for path in files} | {
            path.partition("/")[0] for path in dirs
        }
        if any("/" not in path for path in files) or len(tops) != 1:
            return prefix, files, dirs
        (top,) = tops
        if top.lower() in ("train", *_TEST_NAMES):
            return prefix, files, dirs
        files = [path.partition("/")[2] for path in files]
        dirs = [rest for rest in (path.partition("/")[2] for path in dirs) if rest]
        prefix = _join(prefix, top)
