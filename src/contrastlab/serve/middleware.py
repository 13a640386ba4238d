"""ASGI middleware of the service: API-key check, request-body size limit and body timeout.

Both are plain ASGI wrappers, so they run before any routing or body parsing:

* :class:`ApiKeyMiddleware`: when a key is set, every HTTP request except ``GET /healthz`` must
  carry it as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, else 401. Keys are compared
  in constant time (:func:`hmac.compare_digest`).
* :class:`BodySizeLimitMiddleware`: a declared ``Content-Length`` over the limit is refused with
  413 before anything is read; otherwise the body is read (chunked bodies included) and refused
  with 413 as soon as it passes the limit, then handed to the application from memory (in
  slices of :data:`REPLAY_CHUNK`, so that parsing it yields to other requests). The
  whole body must arrive within ``timeout_s`` of the first read, else 408: a client that sends
  its body slowly (or stops half-way) cannot hold a connection and a request slot for ever.
  Receiving and parsing a body costs the event loop time in proportion to its size, so at most
  ``large_bodies`` requests with a body over ``large_bytes`` (or of unknown, chunked, length)
  are taken at once; another is answered 503 before its body is read. Answers sent before the
  body was read in full carry ``Connection: close``, so the server closes the connection
  instead of waiting for the rest.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that never need the API key.
PUBLIC_PATHS = frozenset({"/healthz"})

#: Header of answers after which the connection must not be reused.
CLOSE = [(b"connection", b"close")]

#: Size of the pieces in which a body read in full is handed to the application.
REPLAY_CHUNK = 256 * 1024


async def send_json_error(send: Send, status: int, error: str, detail: str,
                          headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON error response ``{"error": ..., "detail": ...}``."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """401 for requests without the right key (see the module doc)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    def _authorised(self, scope: Scope) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            authorization = _header(scope, b"authorization") or ""
            scheme, _, token = authorization.partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        return given is not None and hmac.compare_digest(given.encode(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS \
                or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        await send_json_error(send, 401, "unauthorized",
                              "a valid API key is required: send it as 'X-API-Key: KEY' or "
                              "'Authorization: Bearer KEY'",
                              [(b"www-authenticate", b'Bearer realm="contrastlab"')])


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``, 408 for bodies slower than ``timeout_s``, 503 for a
    large body (over ``large_bytes``, or chunked) while ``large_bodies`` are in progress (see
    the module doc)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0,
                 large_bytes: int = 1024 * 1024, large_bodies: int = 1,
                 max_json_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_bytes if max_json_bytes is None else min(max_json_bytes,
                                                                            max_bytes)
        self.timeout_s = timeout_s
        self.large_bytes = large_bytes
        self.large_bodies = large_bodies
        self.large_in_progress = 0

    def _limit(self, scope: Scope) -> tuple[int, str]:
        """The size limit of this request's body and how to word it."""
        media = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if self.max_json_bytes < self.max_bytes and (media == "application/json"
                                                     or media.endswith("+json")):
            return self.max_json_bytes, (
                f"a JSON request body is limited to {self.max_json_bytes} bytes (parsing JSON "
                "holds up the server); send large uploads as multipart/form-data")
        return self.max_bytes, (f"the request body is larger than the limit of "
                                f"{self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, too_large = self._limit(scope)
        declared = _header(scope, b"content-length")
        length = 0
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await send_json_error(send, 400, "bad_request", "invalid Content-Length header")
                return
            if length > limit:
                await send_json_error(send, 413, "body_too_large", too_large, CLOSE)
                return
        large = length > self.large_bytes or _header(scope, b"transfer-encoding") is not None
        if not large:
            await self._read_and_call(scope, receive, send, limit, too_large)
            return
        if self.large_in_progress >= self.large_bodies:
            await send_json_error(send, 503, "busy",
                                  f"the server is already receiving {self.large_bodies} request "
                                  f"bodies over {self.large_bytes} bytes; retry in a moment or "
                                  "send smaller requests", [*CLOSE, (b"retry-after", b"1")])
            return
        self.large_in_progress += 1
        try:
            await self._read_and_call(scope, receive, send, limit, too_large)
        finally:
            self.large_in_progress -= 1

    async def _read_and_call(self, scope: Scope, receive: Receive, send: Send, limit: int,
                             too_large: str) -> None:
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                await send_json_error(send, 408, "request_timeout",
                                      f"the request body did not arrive within "
                                      f"{self.timeout_s:g} s; send it at once", CLOSE)
                return
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_json_error(send, 413, "body_too_large", too_large, CLOSE)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = memoryview(b"".join(chunks))
        position, replayed = 0, False

        async def replay() -> Message:
            # in slices, so that parsing a large body (multipart) yields to other requests
            nonlocal position, replayed
            if replayed:
                return await receive()
            piece = bytes(body[position:position + REPLAY_CHUNK])
            position += REPLAY_CHUNK
            replayed = position >= len(body)
            return {"type": "http.request", "body": piece, "more_body": not replayed}

        await self.app(scope, replay, send)
