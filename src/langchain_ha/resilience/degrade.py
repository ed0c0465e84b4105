"""Degraded answers: recording which component fell back, per request.

A request runs inside a :func:`degradation_scope`; anything on its path (the router when a
fallback provider answered, a retriever wrapper that returned nothing, a tool wrapper, a cache
serving a stale entry) calls :func:`record_degraded`.  The server reads the scope's entries and
puts them in the answer body (``degraded``) and the ``X-LCHA-Degraded`` header.

The scope is a mutable set held in a context variable: asyncio tasks and LangChain's executor
threads copy the context, so they all add to the same set.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_SCOPE: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "lcha_degraded", default=None
)


@contextlib.contextmanager
def degradation_scope() -> Iterator[set[str]]:
    """Collect the degraded components recorded while the block runs."""
    entries: set[str] = set()
    token = _SCOPE.set(entries)
    try:
        yield entries
    finally:
        _SCOPE.reset(token)


def record_degraded(component: str) -> None:
    """Mark the current answer as degraded in ``component`` (no-op outside a scope)."""
    entries = _SCOPE.get()
    if entries is not None:
        entries.add(component)


def current_degraded() -> list[str]:
    """The components recorded so far in the current scope, sorted."""
    entries = _SCOPE.get()
    return sorted(entries) if entries else []
