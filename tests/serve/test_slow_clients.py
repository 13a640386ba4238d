"""Slow and incomplete requests against the real server (uvicorn on a loopback port, in a
thread of this process): they are closed within the header and body timeouts, and a normal
request still succeeds meanwhile. Short timeouts keep the test a few seconds long."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from contrastlab.serve.app import Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.server import ServerSettings, build_server  # noqa: E402

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0
#: How long a connection may stay open at most, with margin for a loaded machine.
BOUND = 15.0


@pytest.fixture(scope="module")
def server(run_encoder) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(Service(run_encoder, limits=ServiceLimits(body_timeout_s=BODY_TIMEOUT)))
    uvicorn_server = build_server(app, ServerSettings(
        port=port, header_timeout_s=HEADER_TIMEOUT, keep_alive_s=1.0, max_connections=200,
        max_header_bytes=8192, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(30)


def open_connection(base: str, payload: bytes) -> socket.socket:
    host, port = base.split("://")[1].split(":")
    connection = socket.create_connection((host, int(port)), timeout=BOUND)
    if payload:
        connection.sendall(payload)
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it keeps
    it open longer than BOUND)."""
    received = b""
    with connection:
        while chunk := connection.recv(65536):
            received += chunk
    return received


HALF_SENT = [
    b"",                                                              # connects, sends nothing
    b"POST /v1/embed HTTP/1.1\r\nHost: x\r\n",                         # headers never end
    b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 5000\r\n\r\n{\"images\": [\"",                   # body never ends
]


def test_half_sent_requests_are_closed_and_others_still_served(server: str, png) -> None:
    connections = [open_connection(server, HALF_SENT[i % 3]) for i in range(50)]
    with httpx.Client(base_url=server, timeout=BOUND) as client:  # served meanwhile
        response = client.post("/v1/similarity", files={"image_a": ("a", png(1)),
                                                        "image_b": ("b", png(2))})
        assert response.status_code == 200, response.text
    answers = [read_until_closed(connection) for connection in connections]  # all closed
    for i, answer in enumerate(answers):
        if i % 3 == 2:  # the server answered the stalled body, then closed
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b'"error":"request_timeout"' in answer.replace(b" ", b"")
        else:
            assert answer == b"", answer[:100]


def test_a_request_head_sent_byte_by_byte_is_cut_off(server: str) -> None:
    connection = open_connection(server, b"")
    started = time.monotonic()
    with pytest.raises(OSError):  # reset or broken pipe once the server has closed it
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
            connection.sendall(bytes([byte]))
            time.sleep(0.02)
            assert time.monotonic() - started < BOUND, "never closed"
    connection.close()


def test_an_oversized_request_head_is_refused(server: str) -> None:
    connection = open_connection(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                                 + b"a" * 20_000)
    answer = read_until_closed(connection)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")


def test_an_idle_kept_alive_connection_gets_a_new_head_deadline(server: str) -> None:
    connection = open_connection(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):
        first += connection.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    connection.sendall(b"GET /heal")  # a second request that never completes
    assert read_until_closed(connection) == b""
