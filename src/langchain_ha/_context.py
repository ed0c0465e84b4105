"""Per-request context shared by every layer without imports between them.

The server sets the request's idempotency key (or its request id when the client sent none);
stores that perform side effects (chat-history appends, task enqueues) use it to make a retried
request's effects happen once.  The key is scoped to the caller: two clients sending the same
``Idempotency-Key`` get different request keys.

It also sets the caller: an id derived from the request's API key (never the key, nor the hash
the server checks it against), ``None`` when the server has no keys configured.  An
application that keeps per-user state (the demo bot's chat sessions) prefixes its keys with it,
so one client cannot read or write another's.
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


_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("lcha_caller", default=None)


@contextlib.contextmanager
def caller_scope(caller: str | None) -> Iterator[None]:
    """Run the block on behalf of ``caller`` (see :func:`current_caller`)."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


def current_caller() -> str | None:
    """The id of the API key the request being served came with (``None``: no keys)."""
    return _CALLER.get()


def caller_scoped(name: str, caller: str | None) -> str:
    """``name`` (a session id, say) as kept for ``caller``: prefixed with the caller's id, so
    two callers choosing the same name get two things (unchanged when there is no caller)."""
    return f"{caller}:{name}" if caller else name
