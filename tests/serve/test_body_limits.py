"""BodySizeLimitMiddleware on its own (ASGI calls, no server): the JSON body limit, one large
body at a time, the body deadline, and the body handed on in slices."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from contrastlab.serve.middleware import REPLAY_CHUNK, BodySizeLimitMiddleware

MiB = 1024 * 1024


class Recorder:
    """A stand-in application: reads the whole body, answers 200 with its length."""

    def __init__(self) -> None:
        self.pieces: list[int] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            self.pieces.append(len(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def scope(content_type: str, length: int | None) -> dict[str, Any]:
    headers = [(b"content-type", content_type.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": "/v1/embed", "headers": headers}


async def call(middleware: BodySizeLimitMiddleware, content_type: str, body: bytes,
               stall: asyncio.Event | None = None) -> tuple[int, dict[bytes, bytes], Any]:
    """Send ``body`` in one message (or, with ``stall``, half of it, then wait for ``stall``);
    return the status, headers and body of the answer."""
    messages = ([{"type": "http.request", "body": body, "more_body": False}] if stall is None
                else [{"type": "http.request", "body": body[: len(body) // 2],
                       "more_body": True}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        assert stall is not None
        await stall.wait()
        return {"type": "http.request", "body": body[len(body) // 2:], "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope(content_type, len(body)), receive, send)
    headers = dict(sent[0].get("headers", []))
    payload = sent[1]["body"]
    return sent[0]["status"], headers, json.loads(payload) if sent[0]["status"] != 200 \
        else int(payload)


def test_json_bodies_have_their_own_smaller_limit() -> None:
    middleware = BodySizeLimitMiddleware(Recorder(), max_bytes=16 * MiB, max_json_bytes=MiB)
    status, headers, answer = asyncio.run(call(middleware, "application/json",
                                               b"x" * (MiB + 1)))
    assert status == 413 and answer["error"] == "body_too_large"
    assert "multipart/form-data" in answer["detail"] and headers[b"connection"] == b"close"
    status, _, length = asyncio.run(call(middleware, "multipart/form-data; boundary=b",
                                         b"x" * (MiB + 1)))
    assert status == 200 and length == MiB + 1


def test_one_large_body_at_a_time() -> None:
    recorder = Recorder()
    middleware = BodySizeLimitMiddleware(recorder, max_bytes=16 * MiB, large_bytes=MiB)
    large = b"y" * (2 * MiB)

    async def scenario() -> None:
        stall = asyncio.Event()
        first = asyncio.create_task(call(middleware, "multipart/form-data", large, stall))
        while middleware.large_in_progress == 0:
            await asyncio.sleep(0.01)
        status, headers, answer = await call(middleware, "multipart/form-data", large)
        assert status == 503 and answer["error"] == "busy"  # refused before reading its body
        assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
        status, _, length = await call(middleware, "multipart/form-data", b"z" * 1000)
        assert status == 200 and length == 1000  # small bodies are not held up
        stall.set()
        assert (await first)[0] == 200
        assert middleware.large_in_progress == 0

    asyncio.run(scenario())


def test_a_stalled_body_is_408_after_the_deadline() -> None:
    middleware = BodySizeLimitMiddleware(Recorder(), max_bytes=MiB, timeout_s=0.2)

    async def scenario() -> tuple[int, dict[bytes, bytes], Any]:
        return await call(middleware, "application/json", b"{}" * 100, asyncio.Event())

    status, headers, answer = asyncio.run(scenario())
    assert status == 408 and answer["error"] == "request_timeout"
    assert headers[b"connection"] == b"close"


@pytest.mark.parametrize("size", [0, 1, REPLAY_CHUNK, 2 * REPLAY_CHUNK + 5])
def test_the_body_is_handed_on_whole_in_slices(size: int) -> None:
    recorder = Recorder()
    middleware = BodySizeLimitMiddleware(recorder, max_bytes=16 * MiB)
    status, _, length = asyncio.run(call(middleware, "application/json", b"b" * size))
    assert status == 200 and length == size
    assert max(recorder.pieces) <= REPLAY_CHUNK
    assert len(recorder.pieces) == max(1, -(-size // REPLAY_CHUNK))
