"""Helpers of the serving benchmarks: a small MNIST run, a server subprocess, test images."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import shared_path
from PIL import Image


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2),
            "p99_ms": round(percentile(ms, 99), 2), "mean_ms": round(float(np.mean(ms)), 2),
            "max_ms": round(max(ms), 2)}


def mnist_run(run: str | None) -> Path:
    """``run`` if given, else a convnet-small SimCLR run on MNIST (28x28) after a few steps:
    latency does not depend on how well the weights are trained."""
    if run is not None:
        return Path(run)
    from rich.console import Console

    from contrastlab import train
    from contrastlab.config import build_config

    out = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "run"
    config = build_config(None, {"data": str(shared_path("mnist-test")), "out": str(out),
                                 "backbone": "convnet-small", "batch_size": 128, "epochs": 1,
                                 "device": "cpu"})
    train(config, console=Console(quiet=True), stop_after_step=3, evaluate_at_end=False)
    return out


def mnist_pngs(count: int) -> list[bytes]:
    """``count`` MNIST test digits (28x28 grey) encoded as PNG."""
    from contrastlab.data import load_dataset

    images = load_dataset(str(shared_path("mnist-test"))).test.images[:count, 0].numpy()
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(run: Path | None, *extra: str, startup_s: float = 180.0) -> Iterator[str]:
    """Run ``contrastlab serve`` (of ``run``, or of an ``--artefact`` in ``extra``) in a
    subprocess; yield its base URL; stop it with SIGINT."""
    import httpx

    port = free_port()
    model = ["--run", str(run)] if run is not None else []
    process = subprocess.Popen(
        [sys.executable, "-m", "contrastlab", "serve", *model, "--port", str(port),
         "--device", "cpu", "--log-level", "warning", *extra],
        env={**os.environ, "CONTRASTLAB_API_KEY": ""}, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                sys.exit(f"the server exited with code {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit("the server did not start in time")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def multipart_request(base: str, path: str, files: list[tuple[str, bytes]],
                      boundary: str = "contrastlab-bench-boundary") -> bytes:
    """A complete HTTP/1.1 keep-alive POST of ``files`` (field name, PNG bytes) as multipart."""
    host = base.split("://", 1)[1]
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
              f'filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data + b"\r\n"
             for name, data in files]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client over asyncio streams: it sends pre-built requests
    and reads responses with a Content-Length, so the load generator spends as little CPU as
    possible (the server shares this machine's cores with it)."""

    def __init__(self, base: str) -> None:
        host, port = base.split("://", 1)[1].split(":")
        self.host, self.port = host, int(port)
        self.reader: Any = None
        self.writer: Any = None

    async def open(self) -> None:
        import asyncio

        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
