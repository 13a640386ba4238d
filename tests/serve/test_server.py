"""A real server: `contrastlab serve` in a subprocess on 127.0.0.1, spoken to over HTTP."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from contrastlab.serve.service import ServiceLimits  # noqa: E402
from tests.serve.serve_helpers import encode_png  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_over_http_then_shut_down(trained_run: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CONTRASTLAB_API_KEY": "k3y", "COLUMNS": "120"}
    log = tmp_path / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "contrastlab", "serve", "--run", str(trained_run),
             "--port", str(port), "--device", "cpu"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.3)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/v1/info").status_code == 401  # the key comes from the env
            headers = {"X-API-Key": "k3y"}
            info = client.get("/v1/info", headers=headers).json()
            assert info["input"] == {**info["input"], "image_size": 8, "channels": 1}
            assert info["limits"] == ServiceLimits().to_json()  # the command's defaults
            image = encode_png(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
            same = client.post("/v1/similarity", headers=headers,
                               files={"image_a": ("a.png", image), "image_b": ("b.png", image)})
            assert same.status_code == 200 and same.json()["cosine"] == pytest.approx(1, abs=1e-6)
            embedded = client.post("/v1/embed", headers=headers,
                                   json={"images": [base64.b64encode(image).decode()] * 2})
            assert embedded.status_code == 200 and embedded.json()["count"] == 2
            bad = client.post("/v1/embed", headers=headers, files={"images": ("x", b"junk")})
            assert bad.status_code == 400 and bad.json()["error"] == "not_an_image"
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    output = log.read_text()
    assert code == 0, output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output  # loopback by default
    assert "Traceback" not in output
