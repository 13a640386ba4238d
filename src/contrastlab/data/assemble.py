"""Turning a planned image tree and its decoded images into :class:`DatasetSplits`.

Shared by the folder and the archive readers: both plan the tree with
:func:`contrastlab.data.layout.plan_layout`, decode :func:`all_paths` in one go (so size and
channel checks span training and test images) and hand the result to :func:`build_datasets`.
With ``skip_bad_files``, a class whose training images were all unreadable raises DataError, as
an empty class folder does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.decode import DecodeResult
from contrastlab.data.layout import Part, Plan
from contrastlab.data.split import make_dataset, official_splits, split_dataset
from contrastlab.errors import DataError


def build_datasets(
    plan: Plan,
    decoded: DecodeResult,
    ids: Sequence[str],
    name: str,
    *,
    test_fraction: float,
    split_seed: int,
) -> DatasetSplits:
    """Assemble :class:`DatasetSplits` from a plan and the decoded images of all its paths.

    ``decoded`` must come from decoding ``plan.train.paths`` followed by ``plan.test.paths`` (when
    there is an official test part), and ``ids`` names those images in the same order.
    """
    n_train = len(plan.train.paths)
    kept = np.asarray(decoded.kept, dtype=np.int64)
    label_array: np.ndarray | None = None
    if plan.train.labels is not None:
        test_labels = plan.test.labels if plan.test is not None and plan.test.labels else []
        label_array = np.asarray(list(plan.train.labels) + list(test_labels), dtype=np.int64)

    def subset(rows: slice, suffix: str) -> ImageDataset:
        # ``kept`` is increasing, so each side is a contiguous block of rows: slicing shares memory.
        sources = kept[rows]
        return make_dataset(
            decoded.images[rows],
            None if label_array is None else label_array[sources],
            plan.classes,
            [ids[i] for i in sources.tolist()],
            f"{name}{suffix}",
        )

    n_kept_train = int(np.searchsorted(kept, n_train))
    if label_array is not None and plan.classes is not None and decoded.skipped:
        _check_no_class_lost(plan, label_array[kept[:n_kept_train]], ids)
    if plan.test is None:
        everything = subset(slice(0, len(kept)), "")
        return split_dataset(
            everything, test_fraction=test_fraction, split_seed=split_seed, skipped=decoded.skipped
        )
    return official_splits(
        subset(slice(0, n_kept_train), " (train)"),
        subset(slice(n_kept_train, len(kept)), " (test)"),
        skipped=decoded.skipped,
    )


def _check_no_class_lost(plan: Plan, kept_labels: np.ndarray, ids: Sequence[str]) -> None:
    """Refuse a class whose training images were all unreadable and skipped: like an empty class
    folder, it would be a class without a single training image."""
    assert plan.classes is not None and plan.train.labels is not None
    present = set(np.unique(kept_labels).tolist())
    for label, name in enumerate(plan.classes):
        if label in present:
            continue
        rows = [i for i, value in enumerate(plan.train.labels) if value == label]
        raise DataError(
            f"every training image of class '{name}' ({len(rows)} file(s), e.g. {ids[rows[0]]}) "
            "is unreadable and was skipped (--skip-bad-files), which would leave the class "
            "without images; fix the files or remove the class folder"
        )


def all_paths(plan: Plan) -> list[str]:
    """The training paths followed by the official test paths, if any."""
    parts: list[Part] = [plan.train] if plan.test is None else [plan.train, plan.test]
    return [path for part in parts for path in part.paths]
