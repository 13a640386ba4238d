"""Micro-batching: every request gets its own rows, concurrent requests share passes."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from contrastlab.serve.batching import MicroBatcher, ServerBusyError


def row_sums(images: np.ndarray) -> np.ndarray:
    """A stand-in encoder: each image's pixel sum and its first pixel."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return np.stack([flat.sum(axis=1), flat[:, 0]], axis=1)


def requests(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(1, 4)), 1, 2, 2), dtype=np.uint8)
            for _ in range(count)]


def test_concurrent_requests_are_batched_and_get_their_own_rows() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def encoder(images: np.ndarray) -> np.ndarray:
        gate.wait(5)  # hold the first batch so the others queue up behind it
        sizes.append(len(images))
        return row_sums(images)

    batcher = MicroBatcher(encoder, max_batch=8, max_wait_ms=5)
    inputs = requests(20)

    async def main() -> list[np.ndarray]:
        tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(*tasks)
        await batcher.stop()
        return out

    outputs = asyncio.run(main())
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, row_sums(x))
    total = sum(len(x) for x in inputs)
    assert sum(sizes) == total and max(sizes) <= 8
    assert len(sizes) < len(inputs)  # shared forward passes
    assert batcher.stats.requests == 20 and batcher.stats.images == total
    batcher.close()


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(lambda x: sizes.append(len(x)) or row_sums(x), max_batch=2)
    big = np.ones((5, 1, 2, 2), dtype=np.uint8)

    async def main() -> np.ndarray:
        out = await batcher.submit(big)
        await batcher.stop()
        return out

    assert asyncio.run(main()).shape == (5, 2) and sizes == [5]
    batcher.close()


def test_encoder_failure_reaches_every_request_of_the_batch_and_the_worker_survives() -> None:
    calls = {"n": 0}

    def flaky(images: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return row_sums(images)

    batcher = MicroBatcher(flaky, max_batch=16, max_wait_ms=20)

    async def main() -> tuple[list, np.ndarray]:
        first = await asyncio.gather(*(batcher.submit(x) for x in requests(3)),
                                     return_exceptions=True)
        later = await batcher.submit(np.ones((1, 1, 2, 2), dtype=np.uint8))
        await batcher.stop()
        return first, later

    first, later = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    np.testing.assert_array_equal(later, [[4.0, 1.0]])
    batcher.close()


def test_full_queue_raises_server_busy() -> None:
    gate = threading.Event()
    batcher = MicroBatcher(lambda x: gate.wait(5) and row_sums(x), max_batch=1, max_queue=2)

    async def main() -> list:
        tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return out

    inputs = requests(6)
    results = asyncio.run(main())
    busy = [r for r in results if isinstance(r, ServerBusyError)]
    assert len(busy) >= 1 and len(results) - len(busy) >= 2  # at most 2 could wait
    for x, y in zip(inputs, results, strict=True):
        if not isinstance(y, ServerBusyError):
            np.testing.assert_array_equal(y, row_sums(x))
    batcher.close()


def test_the_worker_follows_a_new_event_loop() -> None:
    batcher = MicroBatcher(row_sums)
    for _ in range(2):  # e.g. two TestClient sessions, each with its own loop
        out = asyncio.run(batcher.submit(np.ones((2, 1, 2, 2), dtype=np.uint8)))
        np.testing.assert_array_equal(out, [[4.0, 1.0], [4.0, 1.0]])
    batcher.close()


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(row_sums, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(row_sums, max_wait_ms=-1)
