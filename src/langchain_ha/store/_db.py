"""What the stores need from a database: a writer and a reader connection source.

:class:`langchain_ha.store.connect.Database` provides both (a read-write pool following the
primary and a prefer-standby pool).  The stores depend only on this protocol, so any object
with ``writer()``/``reader()`` async context managers works.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg_pool

T = TypeVar("T")

AsyncConn = psycopg.AsyncConnection[Any]

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# Errors that mean "this pool cannot serve right now", so another pool may.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg.errors.AdminShutdown,
)


class ConnectionSource(Protocol):
    """A database seen as a writer pool (the primary) and a reader pool (standbys first)."""

    def writer(self) -> AbstractAsyncContextManager[AsyncConn]: ...

    def reader(self) -> AbstractAsyncContextManager[AsyncConn]: ...


def valid_name(name: str, what: str = "collection") -> str:
    """Return ``name`` if it is a safe SQL identifier part, else raise ``ValueError``."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-40 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


async def on_writer(db: ConnectionSource, fn: Callable[[AsyncConn], Awaitable[T]]) -> T:
    """Run ``fn`` in one committed transaction on the writer (the primary)."""
    async with db.writer() as conn, conn.transaction():
        return await fn(conn)


async def on_reader(db: ConnectionSource, fn: Callable[[AsyncConn], Awaitable[T]]) -> T:
    """Run ``fn`` on a reader (a standby when one answers), falling back to the writer."""
    try:
        async with db.reader() as conn, conn.transaction():
            return await fn(conn)
    except UNAVAILABLE:
        async with db.writer() as conn, conn.transaction():
            return await fn(conn)


async def on_writer_then_reader(db: ConnectionSource, fn: Callable[[AsyncConn], Awaitable[T]]) -> T:
    """Run ``fn`` on the writer (fresh data); if the primary is unavailable, on a reader."""
    try:
        async with db.writer() as conn, conn.transaction():
            return await fn(conn)
    except UNAVAILABLE:
        async with db.reader() as conn, conn.transaction():
            return await fn(conn)


def vector_literal(values: list[float]) -> str:
    """pgvector's text form of an embedding (sent as a bound parameter, cast to ``vector``)."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"
