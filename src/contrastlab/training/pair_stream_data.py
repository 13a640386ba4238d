"""The streamed data of ``train-pairs`` on WebDataset shards (``--stream auto|on``).

Instead of decoding every pair into memory (:func:`contrastlab.training.pair_trainer.
read_pair_data`), the run catalogues the shards' headers (images and ``.txt`` members,
:func:`contrastlab.data.pair_stream.catalog_pair_shards`), decodes a preview of the first
:data:`~contrastlab.data.streamed.PREVIEW_IMAGES` images for the channel count, the working size
and the channel statistics (as image streaming does, :func:`contrastlab.data.streamed.
open_stream`), and reads each batch's images and captions in DataLoader worker processes during
training (:class:`contrastlab.data.pair_stream.PairEpochStream`), where the captions are
tokenised too: measured at about 60 us per caption (``encode_batch`` of the tokenizers library
on the shared 2-core machine, 1,024 captions of 8-20 words: 65 ms a batch), a cost that would
otherwise fall on the training process between steps.

**Order.** That of image streaming (:mod:`contrastlab.data.stream_order`): rank r of R reads its
own shards (a seeded share), in an order drawn from (seed, epoch, rank), through a shuffle buffer
of ``shuffle_buffer`` sample numbers; an epoch is ``steps_per_epoch`` batches on every rank. The
loop's step number n is batch ``n % steps_per_epoch`` of epoch ``n // steps_per_epoch``, so the
position that a checkpoint stores (:class:`~contrastlab.training.small_loop.LoopPosition`) is the
position in the stream: a resumed run recomputes the epoch's order and starts at that batch,
and takes the batches an uninterrupted run takes. The checkpoint records the stream's identity
(:meth:`StreamedPairs.identity`): a resume whose data, shuffle buffer or number of processes
give another stream is refused.

**Tokenizer.** ``--tokenizer`` (or the resumed run's), else a WordPiece tokenizer trained on the
distinct captions of the first :data:`TOKENIZER_CAPTIONS` samples in catalog order (all of them
for a smaller set, which is what the in-memory path trains on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from contrastlab.data.pair_stream import (
    PairCatalog,
    PairEpochStream,
    catalog_pair_shards,
    read_captions,
)
from contrastlab.data.shard_format import is_brace_pattern
from contrastlab.data.shard_set import ShardSet, find_shard_sets
from contrastlab.data.stream import default_workers, iterate_items
from contrastlab.data.stream_order import epoch_order, steps_per_epoch
from contrastlab.data.streamed import PREVIEW_IMAGES, open_stream
from contrastlab.data.tokenizer import TextTokenizer, TokenBatch, train_tokenizer
from contrastlab.errors import CheckpointError, ConfigError, DataError
from contrastlab.training.ddp import Distributed
from contrastlab.training.pair_settings import PairRunSettings
from contrastlab.views import channel_stats

#: Samples whose captions train the tokenizer of a streamed run when none is given.
TOKENIZER_CAPTIONS = 100_000


def pair_shards_to_stream(data: str, stream: str, saved: dict[str, Any] | None
                          ) -> ShardSet | None:
    """The training shards of ``data`` when the run streams them, else None (in memory).

    ``stream``: ``auto`` and ``on`` stream shards, ``off`` never streams. A run resumed from a
    checkpoint written before pairs could stream (no ``stream`` entry) continues in memory.

    Raises:
        ConfigError: ``on`` for data that are not shards.
    """
    if stream == "off" or (saved is not None and "stream" not in saved):
        return None
    found = (find_shard_sets(data) if is_brace_pattern(data) or Path(data).expanduser().is_dir()
             else None)
    if found is None:
        if stream == "on":
            raise ConfigError(f"--stream on needs WebDataset tar shards (.jpg + .txt members) "
                              f"but data '{data}' is a caption folder or table; pairs of those "
                              "are read into memory: use --stream auto or off")
        return None
    return found[0]


class StreamedPairs:
    """Batches of pairs streamed from shards for one rank (see the module doc).

    Args:
        shards: the training shards.
        image_size: the working size (None: the preview's, which must be square).
        max_length: tokens per caption at most.
        tokenizer: the tokenizer (None: train one on the first captions, ``vocab_size``).
        seed, rank, world, batch_size: the run's seed, this process, the process count and the
            global batch (a single process with fewer pairs takes them all in one batch).
        buffer: the shuffle buffer's size in samples.
        workers: decoding processes (None: :func:`~contrastlab.data.stream.default_workers`).
        skip_bad_files: leave samples without a caption out and replace unreadable ones.
        pin_memory: pin the batches (a CUDA device).
        say: progress messages.
    """

    def __init__(self, shards: ShardSet, *, image_size: int | None, max_length: int,
                 tokenizer: TextTokenizer | None, vocab_size: int, seed: int, rank: int,
                 world: int, batch_size: int, buffer: int, workers: int | None,
                 skip_bad_files: bool, pin_memory: bool = False,
                 say: Callable[[str], None] = lambda _: None) -> None:
        self.shards = shards
        self.catalog: PairCatalog = catalog_pair_shards(shards, skip_bad_files)
        opened = open_stream(shards, image_size=image_size, skip_bad_files=skip_bad_files,
                             preview=PREVIEW_IMAGES, catalog=self.catalog.images)
        self.image_size, self.channels = opened.image_size, opened.channels
        self.mean, self.std = channel_stats(opened.preview.images)
        self.skipped: list[str] = self.catalog.skipped + opened.skipped
        if tokenizer is None:
            captions = read_captions(self.catalog, TOKENIZER_CAPTIONS)
            tokenizer = train_tokenizer(list(dict.fromkeys(captions)), vocab_size=vocab_size)
            say(f"trained a WordPiece tokenizer of {tokenizer.vocab_size} tokens on the captions "
                f"of the first {min(len(self.catalog), TOKENIZER_CAPTIONS)} samples")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.batch_size = min(batch_size, len(self.catalog)) if world == 1 else batch_size
        self.seed, self.rank, self.world, self.buffer = seed, rank, world, buffer
        self.local_batch = self.batch_size // world
        self.workers = default_workers() if workers is None else workers
        self.skip_bad_files, self.pin_memory = skip_bad_files, pin_memory
        self.steps_per_epoch = steps_per_epoch(self.catalog.images.counts, seed, world,
                                               self.local_batch)
        if self.steps_per_epoch < 1:
            raise DataError(f"the shards of {shards.name} give a process fewer pairs than its "
                            f"{self.local_batch} pairs of a batch; lower --batch-size or build "
                            "more shards")
        self._items: Iterator[dict[str, Any]] | None = None
        self._next: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.catalog)

    def identity(self) -> dict[str, Any]:
        """What makes the stream: a resumed run must find the same (:meth:`check_resume`)."""
        return {"pairs": len(self.catalog), "shards": len(self.catalog.images.shards),
                "world": self.world, "steps_per_epoch": self.steps_per_epoch,
                "shuffle_buffer": self.buffer}

    def check_resume(self, saved: dict[str, Any], out: Path) -> None:
        """Refuse to continue a streamed run on another stream.

        Raises:
            CheckpointError: naming what differs.
        """
        before, now = saved.get("stream") or {}, self.identity()
        for key, value in now.items():
            if key in before and before[key] != value:
                what = ("processes (torchrun --nproc_per_node)" if key == "world"
                        else key.replace("_", " "))
                raise CheckpointError(
                    f"cannot resume '{out}': its stream had {before[key]} {what} but this run "
                    f"has {value}; a streamed run continues exactly only on the same shards "
                    "with the same settings and number of processes")

    def batch(self, number: int, on_skipped: Callable[[list[str]], None]
              ) -> tuple[torch.Tensor, TokenBatch]:
        """uint8 images (local batch, C, S, S) and their captions' tokens (cut to the longest)
        of the loop's step ``number``: batch ``number % steps_per_epoch`` of epoch ``number //
        steps_per_epoch`` of this rank's stream."""
        epoch, position = divmod(number, self.steps_per_epoch)
        if self._items is None or self._next != (epoch, position):
            self._open(epoch, position)
        assert self._items is not None
        item = next(self._items)
        self._next = (epoch, position + 1)
        if item["skipped"]:
            self.skipped.extend(item["skipped"])
            on_skipped(item["skipped"])
        return item["images"], TokenBatch(item["ids"], item["mask"])

    def _open(self, epoch: int, start: int) -> None:
        self.close()
        order = epoch_order(self.catalog.images.counts, seed=self.seed, epoch=epoch,
                            rank=self.rank, world=self.world, buffer=self.buffer,
                            length=self.steps_per_epoch * self.local_batch)
        stream = PairEpochStream(self.catalog, order, local_batch=self.local_batch,
                                 start=start, steps=self.steps_per_epoch,
                                 image_size=self.image_size, channels=self.channels,
                                 skip_bad_files=self.skip_bad_files, tokenizer=self.tokenizer,
                                 max_length=self.max_length)
        self._items = iterate_items(stream, self.workers, self.pin_memory)  # type: ignore[arg-type]

    def close(self) -> None:
        """End the worker processes of the epoch in progress."""
        if self._items is not None:
            self._items.close()  # type: ignore[attr-defined]
        self._items, self._next = None, None


def open_streamed_pairs(settings: PairRunSettings, shards: ShardSet, ddp: Distributed,
                        say: Callable[[str], None], tokenizer: TextTokenizer | None
                        ) -> StreamedPairs:
    """:class:`StreamedPairs` of this rank for ``settings``; under torchrun rank 0 opens the
    stream first (a bad shard stops every rank with its error, a tokenizer is trained once) and
    every rank then opens its own with rank 0's tokenizer."""
    train = settings.train
    if tokenizer is None and train.tokenizer:
        tokenizer = TextTokenizer.from_file(train.tokenizer)

    def open_with(given: TextTokenizer | None) -> StreamedPairs:
        return StreamedPairs(
            shards, image_size=train.image_size, max_length=settings.encoder.max_length,
            tokenizer=given, vocab_size=train.vocab_size, seed=train.seed, rank=ddp.rank,
            world=ddp.world_size, batch_size=train.batch_size, buffer=train.shuffle_buffer,
            workers=train.loader_workers, skip_bad_files=train.skip_bad_files,
            pin_memory=ddp.device.type == "cuda", say=say)

    if not ddp.enabled:
        return open_with(tokenizer)
    data = ddp.on_main(lambda: open_with(tokenizer))
    shared = ddp.from_main(data.tokenizer.to_json() if data is not None else None)
    return data if data is not None else open_with(TextTokenizer.from_json(shared))


__all__ = ["TOKENIZER_CAPTIONS", "StreamedPairs", "open_streamed_pairs", "pair_shards_to_stream"]
