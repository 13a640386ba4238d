"""The HTTP server around the application: uvicorn, with limits on slow and incomplete requests.

uvicorn closes idle kept-alive connections (``timeout_keep_alive``) but not a connection that
sends part of a request head and then nothing, or one byte every few seconds (any byte also
stops its keep-alive timer): 3,000 such connections stayed open indefinitely. Here:

* a connection must deliver a complete request head (request line and headers) within
  ``header_timeout_s`` of being opened or of its previous answer, and at most
  ``max_header_bytes`` of it, else it is closed (:func:`guard_protocol`, a subclass of the
  protocol class uvicorn chose, h11 or httptools);
* the body must arrive within ``body_timeout_s`` (:class:`BodySizeLimitMiddleware`, 408);
* idle kept-alive connections are closed after ``keep_alive_s`` (uvicorn);
* at most ``max_connections`` connections and requests are served at once; requests beyond are
  answered 503 by uvicorn (``limit_concurrency``).

These bound what one client can hold, not how many clients there are: behind a public address,
put a reverse proxy in front (docs/serving.md) for per-client connection and rate limits.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from contrastlab.serve.deps import require

#: uvicorn's exit code when the server could not start (``uvicorn.run`` uses it too).
STARTUP_FAILURE = 3


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens and what it allows a connection (see the module doc)."""

    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    max_header_bytes: int = 16 * 1024
    log_level: str = "info"
    access_log: bool = False


def guard_protocol(base: type[asyncio.Protocol], header_timeout_s: float,
                   max_header_bytes: int) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` that closes a connection whose
    request head takes longer than ``header_timeout_s`` or more than ``max_header_bytes``.

    A connection is *waiting for a head* from when it opens, and again from each completed
    answer, until uvicorn starts a new request cycle (``self.cycle`` changes).
    """

    class HeadGuardedProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None
        _waiting_cycle: Any = None
        _head_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting():
                self._head_bytes += len(data)
                if self._head_bytes > max_header_bytes:
                    self._close("request head too large")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._wait_for_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _waiting(self) -> bool:
            """No request has started since the connection began waiting for a head."""
            cycle = self._waiting_cycle
            return self.cycle is cycle and (cycle is None or cycle.response_complete)

        def _wait_for_head(self) -> None:
            self._stop_timer()
            if self.transport is None or self.transport.is_closing():
                return
            self._waiting_cycle, self._head_bytes = self.cycle, 0
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._waiting():
                self._close("request head timeout")

        def _close(self, why: str) -> None:
            self._stop_timer()
            if not self.transport.is_closing():
                self.logger.debug("closing a connection: %s", why)
                self.transport.close()

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    HeadGuardedProtocol.__name__ = f"HeadGuarded{base.__name__}"
    return HeadGuardedProtocol


def build_server(app: Any, settings: ServerSettings) -> Any:
    """A ``uvicorn.Server`` for ``app`` with the limits of ``settings`` (not started)."""
    uvicorn = require("uvicorn", "contrastlab serve")
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        server_header=False, access_log=settings.access_log,
        timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes)
    config.load()  # picks the protocol class (httptools when installed, else h11)
    config.http_protocol_class = guard_protocol(config.http_protocol_class,
                                                settings.header_timeout_s,
                                                settings.max_header_bytes)
    return uvicorn.Server(config)


def run_server(app: Any, settings: ServerSettings) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM); exit code 3 if it could not start."""
    server = build_server(app, settings)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
