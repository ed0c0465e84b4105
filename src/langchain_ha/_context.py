"""Per-request context shared by every layer without imports between them.

The server sets the request's idempotency key (or its request id when the client sent none);
stores that perform side effects (chat-history appends, task enqueues) use it to make a retried
request's effects happen once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_REQUEST_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lcha_request_key", default=None
)


@contextlib.contextmanager
def request_key_scope(key: str | None) -> Iterator[None]:
    """Run the block with ``key`` as the current request key."""
    token = _REQUEST_KEY.set(key)
    try:
        yield
    finally:
        _REQUEST_KEY.reset(token)


def current_request_key() -> str | None:
    """The idempotency key (or request id) of the request being served, if any."""
    return _REQUEST_KEY.get()
