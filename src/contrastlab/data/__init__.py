"""Reading datasets into memory: ``load_dataset(spec)`` and the dataset containers.

See :func:`load_dataset` and :func:`describe_accepted` for what can be read, and
:mod:`contrastlab.data.decode` for how image files are decoded and converted.
"""

from contrastlab.data.dataset import DatasetSplits, ImageDataset
from contrastlab.data.loader import describe_accepted, load_dataset
from contrastlab.data.split import stratified_split

__all__ = [
    "DatasetSplits",
    "ImageDataset",
    "describe_accepted",
    "load_dataset",
    "stratified_split",
]
