"""uvicorn's httptools protocol with a bound on the header phase: size and time.

uvicorn 0.54 limits neither with httptools (``h11_max_incomplete_event_size`` exists for h11
only; llhttp itself accepts megabytes of headers), and it has no header-read timeout:
``timeout_keep_alive`` runs only between two requests, so a connection that sends nothing,
or half a request line, stays open for ever and keeps one of ``limit_concurrency``'s slots.

:class:`BoundedHttpTools` adds both, and nothing else:

- request line plus headers above ``max_header_bytes`` → 431 and the connection is closed;
- headers not complete ``header_timeout_s`` after the connection opened (first request) or
  after the request's first byte (later requests on a kept-alive connection) → 408 and the
  connection is closed (closed silently when not one byte of a request came).

The body has its own timeout in the gate (``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_LINGER_S = 1.0
"""After a refusal, how long to read (and drop) what the client still sends before closing:
closing with unread data would reset the connection, and the client might lose the answer."""


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a refused request."""


class BoundedHttpTools(HttpToolsProtocol):
    """See the module docstring; :meth:`with_limits` makes a class for uvicorn's ``http``."""

    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0

    @classmethod
    def with_limits(cls, max_header_bytes: int, header_timeout_s: float,
                    ) -> type[BoundedHttpTools]:
        """A subclass with these limits (uvicorn instantiates the class it is given)."""
        return type(cls.__name__, (cls,), {"max_header_bytes": max_header_bytes,
                                           "header_timeout_s": header_timeout_s})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._mid_request = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._mid_request = True
        if self._header_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._mid_request = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal already answered and closed the connection
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse(431, "headers_too_large", "request line and headers exceed "
                         f"max_header_bytes={self.max_header_bytes}", self.max_header_bytes)
            raise _Refused

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request behind one still being answered (a long stream, say): the
            # answer is not cut; the next request's headers get another period.
            self._arm()
        elif self._mid_request:
            self._refuse(408, "header_timeout", "request headers not received within "
                         f"header_timeout_s={self.header_timeout_s:g}", self.header_timeout_s)
        else:  # not one byte of a request came: nobody to answer
            self._refused = True
            self.transport.close()

    def _refuse(self, status: int, kind: str, message: str, limit: float) -> None:
        self._refused = True
        self._disarm()
        body = json.dumps({"error": {"type": kind, "message": message, "limit": limit}}).encode()
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()
