"""Idempotent HTTP responses in PostgreSQL: a retried request gets the first answer.

The server calls :meth:`PgIdempotencyStore.claim` with the request's idempotency key: the
first claimer wins and computes the answer, then :meth:`put` stores it; any other replica that
receives the same key either finds the stored response with :meth:`get` or waits for it with
:meth:`wait`.  A claim expires after its ``ttl_s`` (the claimer crashed), so a later request
can claim again (a claimer that is still running extends it with :meth:`renew`); a stored
response expires after its own ``ttl_s``.

Keys are whatever the caller passes; the replica server passes keys already scoped to the
API client (:func:`langchain_ha.serve.idempotency.scoped_key`) and stores a fingerprint of the
request body beside each response, so a reused key with another body can be refused.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from psycopg.types.json import Jsonb

from langchain_ha.store._db import AsyncConn, ConnectionSource, on_writer
from langchain_ha.store.schema import ensure_schema

MAX_KEY = 512


@dataclass(frozen=True)
class StoredResponse:
    """An HTTP response kept for replay."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = None
    """The request's fingerprint (None: stored without one)."""


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"idempotency key must be a string of 1..{MAX_KEY} characters")
    return key


class PgIdempotencyStore:
    """Claims and stored responses in ``lcha_idempotency`` (always on the primary)."""

    def __init__(self, db: ConnectionSource) -> None:
        self.db = db

    async def get(self, key: str) -> StoredResponse | None:
        """The stored, unexpired response for ``key``, if any."""
        _check_key(key)
        await ensure_schema(self.db)

        async def read(conn: AsyncConn) -> StoredResponse | None:
            cur = await conn.execute(
                "SELECT status, body, headers, fingerprint FROM lcha_idempotency"
                " WHERE key = %s AND status IS NOT NULL AND expires_at > now()",
                (key,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return StoredResponse(int(row[0]), bytes(row[1] or b""), dict(row[2] or {}), row[3])

        return await on_writer(self.db, read)

    async def claim(self, key: str, ttl_s: float) -> bool:
        """True for the first claimer of ``key`` (or when the earlier claim/response expired)."""
        _check_key(key)
        await ensure_schema(self.db)

        async def claim(conn: AsyncConn) -> bool:
            cur = await conn.execute(
                "INSERT INTO lcha_idempotency AS i (key, claimed_until, expires_at)"
                " VALUES (%s, now() + make_interval(secs => %s), now() + make_interval(secs => %s))"
                " ON CONFLICT (key) DO UPDATE SET claimed_until = EXCLUDED.claimed_until,"
                " expires_at = EXCLUDED.expires_at, status = NULL, body = NULL, headers = NULL,"
                " fingerprint = NULL"
                " WHERE (i.status IS NULL AND i.claimed_until < now()) OR i.expires_at < now()"
                " RETURNING 1",
                (key, float(ttl_s), float(ttl_s)),
            )
            return await cur.fetchone() is not None

        return await on_writer(self.db, claim)

    async def put(
        self, key: str, status: int, body: bytes, headers: dict[str, str], ttl_s: float,
        fingerprint: str | None = None,
    ) -> None:
        """Store the response for ``key`` (committed on return), kept for ``ttl_s``, with
        the ``fingerprint`` of the request it answers."""
        _check_key(key)
        await ensure_schema(self.db)

        async def write(conn: AsyncConn) -> None:
            await conn.execute(
                "INSERT INTO lcha_idempotency"
                " (key, status, body, headers, fingerprint, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
                " ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body,"
                " headers = EXCLUDED.headers, fingerprint = EXCLUDED.fingerprint,"
                " expires_at = EXCLUDED.expires_at, claimed_until = NULL",
                (key, int(status), bytes(body), Jsonb(dict(headers)), fingerprint,
                 float(ttl_s)),
            )

        await on_writer(self.db, write)

    async def renew(self, key: str, ttl_s: float) -> None:
        """Extend an unfinished claim by ``ttl_s`` from now (its claimer is still running)."""
        _check_key(key)

        async def extend(conn: AsyncConn) -> None:
            await conn.execute(
                "UPDATE lcha_idempotency SET claimed_until = now() + make_interval(secs => %s),"
                " expires_at = greatest(expires_at, now() + make_interval(secs => %s))"
                " WHERE key = %s AND status IS NULL",
                (float(ttl_s), float(ttl_s), key),
            )

        await on_writer(self.db, extend)

    async def release(self, key: str) -> None:
        """Drop an unfinished claim (the claimer failed), so a retry can claim at once."""
        _check_key(key)

        async def delete(conn: AsyncConn) -> None:
            await conn.execute(
                "DELETE FROM lcha_idempotency WHERE key = %s AND status IS NULL", (key,)
            )

        await on_writer(self.db, delete)

    async def wait(self, key: str, timeout_s: float, poll_s: float = 0.05) -> StoredResponse | None:
        """Poll for the response another claimer is computing; ``None`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.get(key)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
