"""Latency of POST /v1/similarity over loopback, one request at a time.

The server (`contrastlab serve`, a subprocess) holds the small ConvNet (convnet-small) of a
SimCLR run on MNIST (28x28 grey); each request sends two MNIST test digits as PNG files
(multipart, or base64 JSON with --body json) over a kept-alive httpx connection, so the
figure includes a typical Python client's own time.

    python bench/serve_latency.py [--run RUN | --artefact A] [--requests 500] [--warmup 50]
        [--body multipart|json] [--threads 1]
"""

from __future__ import annotations

import argparse
import base64
import time

from common import emit, machine
from serving import latency_summary, mnist_pngs, mnist_run, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", help="run directory (default: a few-step MNIST run)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--body", choices=["multipart", "json"], default="multipart")
    parser.add_argument("--threads", type=int, default=1, help="server model threads")
    parser.add_argument("--artefact", help="serve this exported artefact instead of the run")
    args = parser.parse_args()

    import httpx

    run = None if args.artefact else mnist_run(args.run)
    extra = ("--threads", str(args.threads), *(("--artefact", args.artefact)
                                              if args.artefact else ()))
    pngs = mnist_pngs(64)
    latencies = []
    with server(run, *extra) as base, httpx.Client(base_url=base, timeout=30) as client:
        info = client.get("/v1/info").json()
        for i in range(args.warmup + args.requests):
            a, b = pngs[i % len(pngs)], pngs[(i * 7 + 1) % len(pngs)]
            start = time.perf_counter()
            if args.body == "json":
                response = client.post("/v1/similarity", json={
                    "image_a": base64.b64encode(a).decode(),
                    "image_b": base64.b64encode(b).decode()})
            else:
                response = client.post("/v1/similarity", files={"image_a": ("a.png", a),
                                                                 "image_b": ("b.png", b)})
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise SystemExit(f"request {i} failed: {response.status_code} {response.text}")
            if i >= args.warmup:
                latencies.append(elapsed)
    emit({"benchmark": "serve_latency", "route": "/v1/similarity", "body": args.body,
          "model": info["model"]["backbone"], "format": info["model"]["format"],
          "quantization": info["model"]["quantization"], "server_threads": args.threads,
          "input": info["input"]["image_size"], "client": "httpx (sync, keep-alive)",
          "requests": len(latencies), **latency_summary(latencies), "machine": machine()})


if __name__ == "__main__":
    main()
