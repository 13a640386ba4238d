"""What a streamed training run knows about its data before the first step.

:func:`open_stream` catalogues the training shards (tar headers only) and decodes a preview, the
first ``preview`` images of the shard set, from which the run takes its channel count, its
working size (when ``image_size`` is not given: the preview's images must then be squares of
one size) and its channel statistics. Nothing else is decoded before training starts; the
batches are decoded by :mod:`contrastlab.data.stream` during training.
"""

from __future__ import annotations

from dataclasses import dataclass

from contrastlab.data.dataset import ImageDataset
from contrastlab.data.shard_memory import decode_catalog
from contrastlab.data.shard_set import ShardCatalog, ShardSet, catalog_shards
from contrastlab.errors import DataError

#: Images decoded before training for the channel statistics and the working size.
PREVIEW_IMAGES = 512


@dataclass
class StreamedData:
    """A streamed training set.

    Attributes:
        shards: the training shards.
        catalog: their samples (from the tar headers).
        preview: the first images, decoded at the working size.
        image_size: the working size S: every streamed image is decoded to S x S.
        skipped: unreadable images of the preview skipped under ``skip_bad_files``.
    """

    shards: ShardSet
    catalog: ShardCatalog
    preview: ImageDataset
    image_size: int
    skipped: list[str]

    @property
    def channels(self) -> int:
        return self.preview.channels

    @property
    def classes(self) -> list[str] | None:
        return self.preview.classes


def open_stream(shards: ShardSet, *, image_size: int | None, skip_bad_files: bool,
                preview: int = PREVIEW_IMAGES, catalog: ShardCatalog | None = None
                ) -> StreamedData:
    """Catalogue ``shards`` (unless their ``catalog`` is given: a folder's, see
    :mod:`contrastlab.data.folder_stream`) and decode their preview (see the module doc).

    Raises:
        DataError: unreadable shards, or preview images that are not squares of one size
            while ``image_size`` is not given.
    """
    if catalog is None:
        catalog = catalog_shards(shards)
    first, skipped = decode_catalog(catalog, shards, count=preview, image_size=image_size,
                                    skip_bad_files=skip_bad_files)
    height, width = first.image_size
    if image_size is None and height != width:
        raise DataError(
            f"the images of {shards.name} are not square (e.g. {first.ids[0]} is {width}x{height}"
            " (width x height)); a stream decodes every image to one working size: pass "
            "--image-size N (image_size=N) to resize them to N x N as they are decoded")
    return StreamedData(shards=shards, catalog=catalog, preview=first,
                        image_size=image_size or height, skipped=skipped)


__all__ = ["PREVIEW_IMAGES", "StreamedData", "open_stream"]
