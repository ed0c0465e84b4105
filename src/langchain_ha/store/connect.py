"""Connections to the HA database: a writer pool that follows the primary and a reader pool
that prefers standbys.

Both use libpq multi-host conninfo: the writer asks for ``target_session_attrs=read-write`` so
after a failover new connections find the new primary; the reader asks for ``prefer-standby``
with ``load_balance_hosts=random`` (read scaling) and still connects to the primary when no
standby answers.  A pooled connection found broken or read-only (the old primary, demoted) is
thrown away and the operation gets one fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from langchain_ha.store import _db

AsyncConn = psycopg.AsyncConnection[Any]

UNAVAILABLE: tuple[type[BaseException], ...] = _db.UNAVAILABLE
"""Errors that mean the database cannot serve now (a failover, a pool timeout)."""


@dataclass(frozen=True)
class DBSettings:
    """Where the cluster's members are, and how patient to be with them."""

    hosts: tuple[tuple[str, int], ...]
    dbname: str = "postgres"
    user: str = "postgres"
    password: str | None = None
    connect_timeout_s: float = 2.0
    statement_timeout_ms: int = 5000
    min_size: int = 1
    max_size: int = 10
    pool_timeout_s: float = 5.0
    libpq: tuple[tuple[str, str], ...] = ()
    """Other libpq parameters of the conninfo (``passfile``, ``sslmode``, ``sslrootcert``...),
    passed on unchanged."""

    @classmethod
    def from_conninfo(cls, conninfo: str, **overrides: Any) -> DBSettings:
        """Parse a libpq conninfo (``host=a,b port=1,2 ...`` or a URL)."""
        params = pg_conninfo.conninfo_to_dict(conninfo)
        hosts = str(params.get("host") or "127.0.0.1").split(",")
        ports = str(params.get("port") or "5432").split(",")
        if len(ports) == 1:
            ports = ports * len(hosts)
        if len(ports) != len(hosts):
            raise ValueError("conninfo: host and port lists differ in length")
        settings = cls(
            hosts=tuple((h, int(p)) for h, p in zip(hosts, ports, strict=True)),
            dbname=str(params.get("dbname") or "postgres"),
            user=str(params.get("user") or "postgres"),
            password=str(params["password"]) if params.get("password") else None,
            libpq=tuple(sorted((k, str(v)) for k, v in params.items()
                               if k not in _MODELLED and v is not None)),
        )
        return replace(settings, **overrides)


# Parameters DBSettings models itself (or each pool sets); any other one is passed on.
_MODELLED = frozenset({"host", "port", "dbname", "user", "password", "connect_timeout",
                       "options", "target_session_attrs", "load_balance_hosts"})


def _conninfo(s: DBSettings, **extra: str) -> str:
    params: dict[str, Any] = {
        **dict(s.libpq),
        "host": ",".join(h for h, _ in s.hosts),
        "port": ",".join(str(p) for _, p in s.hosts),
        "dbname": s.dbname,
        "user": s.user,
        "connect_timeout": max(1, int(s.connect_timeout_s)),
        "options": f"-c statement_timeout={s.statement_timeout_ms}",
        **extra,
    }
    if s.password:
        params["password"] = s.password
    return pg_conninfo.make_conninfo(**params)


def writer_conninfo(s: DBSettings) -> str:
    """Multi-host conninfo that lands on the primary (``target_session_attrs=read-write``)."""
    return _conninfo(s, target_session_attrs="read-write")


def reader_conninfo(s: DBSettings) -> str:
    """Multi-host conninfo that prefers a standby, spread at random over them."""
    return _conninfo(s, target_session_attrs="prefer-standby", load_balance_hosts="random")


class Database:
    """A writer pool and a reader pool over one HA cluster (``async with`` opens and closes)."""

    def __init__(self, settings: DBSettings, reader: DBSettings | None = None) -> None:
        self.settings = settings
        self.reader_settings = reader or settings
        self._writer = self._pool(writer_conninfo(settings), settings, "lcha-writer",
                                  writable=True)
        self._reader = self._pool(reader_conninfo(self.reader_settings), self.reader_settings,
                                  "lcha-reader")

    @classmethod
    def from_conninfo(cls, writer: str, reader: str | None = None, **kw: Any) -> Database:
        """A Database from libpq conninfo strings (the reader defaults to the writer's hosts)."""
        w = DBSettings.from_conninfo(writer, **kw)
        r = DBSettings.from_conninfo(reader, **kw) if reader else None
        return cls(w, r)

    @staticmethod
    def _pool(conninfo: str, s: DBSettings, name: str, *, writable: bool = False,
              ) -> AsyncConnectionPool[AsyncConn]:
        return AsyncConnectionPool(
            conninfo, min_size=s.min_size, max_size=s.max_size, timeout=s.pool_timeout_s,
            open=False, name=name,
            check=check_writable if writable else AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True}, reconnect_timeout=0,
        )

    async def open(self) -> None:
        """Open both pools (without waiting: a member may be down at start)."""
        await self._writer.open(wait=False)
        await self._reader.open(wait=False)

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConn]:
        """A connection to the primary (the pool's checkout check drops stale ones)."""
        async with _checkout(self._writer) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConn]:
        """A connection for reads: a standby if one answers, else the primary."""
        try:
            conn = await self._reader.getconn()
        except Exception:
            async with self.writer() as conn:
                yield conn
            return
        try:
            yield conn
        finally:
            await _give_back(self._reader, conn)

    async def health(self) -> dict[str, object]:
        """Latency and reachability of the writer and the reader side."""
        return {"writer": await _probe(self.writer), "reader": await _probe(self.reader)}


@contextlib.asynccontextmanager
async def _checkout(pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
    conn = await pool.getconn()
    try:
        yield conn
    finally:
        await _give_back(pool, conn)


async def _give_back(pool: AsyncConnectionPool[AsyncConn], conn: AsyncConn) -> None:
    # Shielded: a cancellation (a request's deadline, a client gone) arriving while the
    # connection goes back must not lose it.  A lost connection still counts against
    # max_size; enough of them and every checkout waits out the pool timeout (seen under
    # overload: +1 s on every read, for good).
    await asyncio.shield(pool.putconn(conn))


async def check_writable(conn: AsyncConn) -> None:
    """Checkout check of a writer pool: one round trip that also catches a demoted primary
    (the pool then discards the connection and makes a new one, which finds the new primary).
    Works whatever the connection's row factory."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT pg_is_in_recovery()")
    row = await cur.fetchone()
    if row is None or row[0]:
        raise psycopg.OperationalError("pooled connection is to a standby now (failover)")


async def _probe(source: Any) -> dict[str, object]:
    began = time.perf_counter()
    try:
        async with source() as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            row = await cur.fetchone()
        return {"ok": True, "latency_ms": round((time.perf_counter() - began) * 1000, 2),
                "standby": bool(row and row[0]), "error": None}
    except Exception as exc:
        return {"ok": False, "latency_ms": round((time.perf_counter() - began) * 1000, 2),
                "standby": None, "error": type(exc).__name__}
