"""The HTTP connection guard `vecguard serve` runs uvicorn with: no client holds the server by being slow.

uvicorn on its own waits for a request's headers as long as the client likes,
takes headers of any size when they arrive at once, and counts every open
connection against one limit, so 256 connections that never finish their
headers turn every other request into a 503. Here each request's headers must
arrive within ``header_timeout`` seconds and within ``max_header_bytes`` (431
beyond it), and once ``max_connections`` are open a new connection closes the
one that has waited longest for its headers instead of being refused itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on every request's headers and a cap that evicts the slowest."""

    header_timeout = 10.0
    max_header_bytes = 16 * 1024
    max_connections = 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self.waiting_since: float | None = None  # when this connection began waiting for a request's headers
        super().connection_made(transport)
        self._wait_for_headers()
        if len(self.connections) > self.max_connections:
            waiting = [c for c in self.connections if c is not self and getattr(c, "waiting_since", None) is not None]
            if waiting:
                min(waiting, key=lambda c: c.waiting_since).transport.close()
            else:
                transport.close()  # every other connection is busy with a request: this one waits its turn elsewhere

    def _wait_for_headers(self) -> None:
        self.waiting_since = time.monotonic()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        self._head_bytes, self._tail = 0, b""  # header bytes so far, and the last 3 (the end may straddle two reads)

    def _headers_too_large(self, data: bytes) -> bool:
        combined = self._tail + data
        end = combined.find(b"\r\n\r\n")
        size = self._head_bytes - len(self._tail) + (end + 4 if end >= 0 else len(combined))
        self._head_bytes, self._tail = size, combined[-3:]
        return size > self.max_header_bytes

    def _refuse_headers(self) -> None:
        body = (
            b'{"detail": [{"loc": ["header"], "msg": "request headers over %d bytes ([server] max_header_bytes)"}]}'
            % (self.max_header_bytes)
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self._headers_arrived()
        self.transport.close()

    def _headers_arrived(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.waiting_since = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._wait_for_headers()  # the next request on a kept-alive connection
        if self.waiting_since is not None and self._headers_too_large(data):
            self._refuse_headers()
            return
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # a request's headers were read: its cycle began
            self._headers_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)


def guarded_protocol(*, header_timeout: float, max_header_bytes: int, max_connections: int) -> type[Any]:
    """The protocol class with a server's limits."""
    return type(
        "VecguardH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": float(header_timeout),
            "max_header_bytes": int(max_header_bytes),
            "max_connections": int(max_connections),
        },
    )
