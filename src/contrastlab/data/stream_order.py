"""The order in which a process streams a shard set: a pure function of (seed, epoch, rank).

* **Shards to ranks.** The shards are permuted once by ``seed`` and dealt out round-robin:
  rank r of R reads shards ``perm[r::R]`` in every epoch (a disjoint share; needs at least R
  shards).
* **Within a rank, per epoch.** Its shards are read in an order drawn from (seed, epoch, rank),
  each shard's samples in tar order, through a shuffle buffer of ``buffer`` samples drawn from
  the same generator: the buffer starts with the first ``buffer`` samples; each following sample
  takes the place of a uniformly drawn one, which is emitted; the rest of the buffer is emitted
  in a random order at the end. The buffer holds sample numbers, not images (8 bytes each).
* **An epoch** is ``steps_per_epoch`` batches of ``local_batch`` samples on every rank, with
  ``steps_per_epoch = min over ranks (samples of the rank's shards) // local_batch``, so the
  ranks take the same number of steps. With one process that is every sample but the last
  partial batch, as for data in memory; with R processes, a rank with more samples than the
  smallest share leaves its surplus out (different samples in each epoch, as the order
  changes); the surplus is at most the difference between the largest and the smallest share.

Because the order depends on nothing else (not on the number of DataLoader workers, nor on
timing), the position in an epoch is just the number of batches taken, and a resumed run
continues exactly: it recomputes the order and starts at that batch.
"""

from __future__ import annotations

import numpy as np

from contrastlab.errors import DataError


def shards_of_rank(num_shards: int, seed: int, rank: int, world: int) -> np.ndarray:
    """The shard numbers rank ``rank`` of ``world`` reads (the same in every epoch)."""
    if num_shards < world:
        raise DataError(f"{num_shards} shard(s) cannot be shared by {world} processes: each "
                        "process reads whole shards; build more, smaller shards (contrastlab "
                        "shards build --shard-size ...) or use fewer processes")
    perm = np.random.default_rng([seed, 0x5AD]).permutation(num_shards)
    return np.sort(perm[rank::world])


def steps_per_epoch(counts: np.ndarray, seed: int, world: int, local_batch: int) -> int:
    """Batches per epoch on every rank: the smallest rank share // ``local_batch``."""
    shares = [int(counts[shards_of_rank(len(counts), seed, rank, world)].sum())
              for rank in range(world)]
    return min(shares) // local_batch


def buffer_shuffle(stream: np.ndarray, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """``stream`` through a shuffle buffer of ``buffer`` items (see the module doc)."""
    if buffer <= 1 or len(stream) <= 1:
        return stream.copy()
    size = min(buffer, len(stream))
    held = stream[:size].tolist()
    rest = stream[size:].tolist()
    draws = rng.integers(0, size, len(rest)).tolist()
    out: list[int] = []
    append = out.append
    for item, slot in zip(rest, draws, strict=True):
        append(held[slot])
        held[slot] = item
    tail = np.asarray(held, dtype=np.int64)[rng.permutation(size)]
    return np.concatenate([np.asarray(out, dtype=np.int64), tail])


def epoch_order(counts: np.ndarray, *, seed: int, epoch: int, rank: int, world: int,
                buffer: int, length: int) -> np.ndarray:
    """The first ``length`` sample numbers rank ``rank`` streams in ``epoch``.

    Samples are numbered shard after shard (``counts`` samples per shard).
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    mine = shards_of_rank(len(counts), seed, rank, world)
    rng = np.random.default_rng([seed, epoch, rank])
    order = mine[rng.permutation(len(mine))]
    return buffer_shuffle(shard_runs(starts[order], counts[order]), buffer, rng)[:length]


def shard_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The runs ``starts[i] .. starts[i] + lengths[i] - 1`` one after another (vectorised:
    a folder streamed file by file has a million one-sample "shards")."""
    total = int(lengths.sum())
    run_starts = np.cumsum(lengths) - lengths
    return (np.arange(total, dtype=np.int64) - np.repeat(run_starts, lengths)
            + np.repeat(starts, lengths))


__all__ = ["buffer_shuffle", "epoch_order", "shard_runs", "shards_of_rank", "steps_per_epoch"]
