"""Load run against POST /v1/similarity: many requests at a fixed concurrency, from this process
(a separate process from the server), bounded in time.

Three runs, each on a fresh `contrastlab serve` subprocess with the small ConvNet of an MNIST run
(28x28): concurrency 1 with micro-batching on; concurrency 16 with micro-batching on
(--max-batch 32, --max-wait-ms 2); concurrency 16 with it off (--max-batch 1). Each request
sends two MNIST test digits as PNG files. Prints requests/s, p50/p99 latency and error counts.

    python bench/serve_load.py [--run RUN] [--requests 2000] [--concurrency 16]
        [--requests-c1 300] [--time-limit 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from common import emit, machine
from serving import (
    RawConnection,
    latency_summary,
    mnist_pngs,
    mnist_run,
    multipart_request,
    server,
)


async def load(base: str, pngs: list[bytes], total: int, concurrency: int,
               time_limit: float, client_kind: str) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = time.monotonic() + time_limit
    pairs = [(pngs[i % len(pngs)], pngs[(i * 7 + 1) % len(pngs)]) for i in range(len(pngs))]
    raw_requests = [multipart_request(base, "/v1/similarity", [("image_a", a), ("image_b", b)])
                    for a, b in pairs]

    async def raw_worker() -> None:
        nonlocal issued
        connection = RawConnection(base)
        await connection.open()
        try:
            while issued < total and time.monotonic() < deadline:
                i = issued
                issued += 1
                start = time.perf_counter()
                try:
                    status, _ = await connection.request(raw_requests[i % len(raw_requests)])
                    kind = str(status)
                except (OSError, ValueError, asyncio.IncompleteReadError) as error:
                    kind = type(error).__name__
                    await connection.close()
                    connection = RawConnection(base)
                    await connection.open()
                record(kind, time.perf_counter() - start)
        finally:
            await connection.close()

    async def httpx_worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < total and time.monotonic() < deadline:
            i = issued
            issued += 1
            a, b = pairs[i % len(pairs)]
            start = time.perf_counter()
            try:
                response = await client.post("/v1/similarity", files={
                    "image_a": ("a.png", a), "image_b": ("b.png", b)})
                kind = str(response.status_code)
            except httpx.HTTPError as error:
                kind = type(error).__name__
            record(kind, time.perf_counter() - start)

    def record(kind: str, elapsed: float) -> None:
        if kind == "200":
            latencies.append(elapsed)
        else:
            errors[kind] = errors.get(kind, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        for a, b in pairs[:20]:  # warm-up, not counted
            await client.post("/v1/similarity", files={"image_a": ("a.png", a),
                                                       "image_b": ("b.png", b)})
        info_before = (await client.get("/v1/info")).json()["batching"]
        start = time.perf_counter()
        if client_kind == "raw":
            await asyncio.gather(*(raw_worker() for _ in range(concurrency)))
        else:
            await asyncio.gather(*(httpx_worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
        info_after = (await client.get("/v1/info")).json()["batching"]
    batches = info_after["batches"] - info_before["batches"]
    served = info_after["requests"] - info_before["requests"]
    return {"concurrency": concurrency, "requests": issued, "ok": len(latencies),
            "errors": sum(errors.values()), "error_kinds": errors,
            "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 1),
            **latency_summary(latencies or [0.0]),
            "timed_out": issued < total,
            "mean_requests_per_batch": round(served / batches, 2) if batches else None}


def run_one(run: Path | None, pngs: list[bytes], total: int, concurrency: int, time_limit: float,
            client: str, *server_args: str) -> dict[str, Any]:
    with server(run, *server_args) as base:
        return asyncio.run(load(base, pngs, total, concurrency, time_limit, client))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", help="run directory (default: a few-step MNIST run)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--time-limit", type=float, default=300.0, help="per run, seconds")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="server model threads")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: a minimal HTTP/1.1 client (little client CPU); httpx")
    parser.add_argument("--artefact", help="serve this exported artefact instead of the run")
    args = parser.parse_args()

    run = None if args.artefact else mnist_run(args.run)
    pngs = mnist_pngs(64)
    common = ("--threads", str(args.threads),
              *(("--artefact", args.artefact) if args.artefact else ()))
    batching = (*common, "--max-batch", str(args.max_batch), "--max-wait-ms",
                str(args.max_wait_ms))
    sequential = run_one(run, pngs, args.requests_c1, 1, args.time_limit, args.client,
                         *batching)
    batched = run_one(run, pngs, args.requests, args.concurrency, args.time_limit, args.client,
                      *batching)
    unbatched = run_one(run, pngs, args.requests, args.concurrency, args.time_limit,
                        args.client, *common, "--max-batch", "1")
    emit({"benchmark": "serve_load", "route": "/v1/similarity",
          "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
          "server_threads": args.threads, "client": args.client,
          "model": args.artefact or "pytorch run",
          "concurrency_1": sequential, "concurrency_n_batched": batched,
          "concurrency_n_unbatched": unbatched,
          "speedup_batched_vs_c1": round(batched["requests_per_s"]
                                         / max(sequential["requests_per_s"], 1e-9), 2),
          "speedup_batched_vs_unbatched": round(batched["requests_per_s"]
                                                / max(unbatched["requests_per_s"], 1e-9), 2),
          "machine": machine()})


if __name__ == "__main__":
    main()
