"""Circuit-breaker state shared by every replica through PostgreSQL.

Implements the ``BreakerStore`` protocol of :mod:`langchain_ha.resilience.breaker`.  The hot
path never waits on the database per call: :meth:`PgBreakerStore.load` answers from a local
cache for ``cache_ttl_s`` and only then reads again (one read at a time per breaker, bounded by
``timeout_s``; if the database does not answer, the last known state is kept).  :meth:`save`
is an upsert that keeps the newest ``updated_at``, so concurrent replicas converge, and ends any
probe claim.  :meth:`PgBreakerStore.claim_probe` is one conditional upsert: the first replica
to ask after the shared open interval ended gets the probe, for a lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from psycopg.errors import UndefinedTable

from langchain_ha.resilience.breaker import BreakerState, SharedBreakerState
from langchain_ha.store._db import UNAVAILABLE, AsyncConn, ConnectionSource, on_reader, on_writer
from langchain_ha.store.schema import ensure_schema

log = logging.getLogger(__name__)

_FAILED: tuple[type[BaseException], ...] = (TimeoutError, *UNAVAILABLE)


def _state_text(state: BreakerState) -> str:
    value = getattr(state, "value", state)
    return str(value)


class PgBreakerStore:
    """Shared breaker state in ``lcha_breakers`` with a short local read cache."""

    def __init__(
        self,
        db: ConnectionSource,
        *,
        cache_ttl_s: float = 0.75,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        namespace: str = "",
    ) -> None:
        """``namespace`` prefixes every breaker's row, so apps sharing a database with
        like-named providers keep apart (replicas of one app share one namespace)."""
        self.db = db
        self.namespace = namespace
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cache: dict[str, tuple[float, SharedBreakerState | None]] = {}
        self._inflight: dict[str, asyncio.Future[SharedBreakerState | None]] = {}
        self.db_reads = 0

    async def load(self, name: str) -> SharedBreakerState | None:
        """The shared state of breaker ``name`` (at most ``cache_ttl_s`` old)."""
        cached = self._cache.get(name)
        if cached is not None and self._clock() - cached[0] < self.cache_ttl_s:
            return cached[1]
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[SharedBreakerState | None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = fut
        try:
            state = await self._fetch(name, cached[1] if cached else None)
            fut.set_result(state)
            return state
        finally:
            self._inflight.pop(name, None)
            if not fut.done():
                fut.set_result(cached[1] if cached else None)

    async def _fetch(self, name: str, last: SharedBreakerState | None) -> SharedBreakerState | None:
        async def read(conn: AsyncConn) -> SharedBreakerState | None:
            cur = await conn.execute(
                "SELECT state, open_until, trips, updated_at FROM lcha_breakers WHERE name = %s",
                (self.namespace + name,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return SharedBreakerState(
                state=BreakerState(row[0]), open_until=row[1], trips=row[2], updated_at=row[3]
            )

        self.db_reads += 1
        try:
            state = await asyncio.wait_for(on_reader(self.db, read), self.timeout_s)
        except UndefinedTable:
            state = None
        except _FAILED as exc:
            log.warning("breaker store: read of %s failed (%s); keeping local state", name, exc)
            state = last
        self._remember(name, state)
        return state

    def _remember(self, name: str, state: SharedBreakerState | None) -> None:
        current = self._cache.get(name)
        if (
            state is not None
            and current is not None
            and current[1] is not None
            and current[1].updated_at > state.updated_at
        ):
            state = current[1]
        self._cache[name] = (self._clock(), state)

    async def save(self, name: str, state: SharedBreakerState) -> None:
        """Publish ``state``; an older ``updated_at`` never overwrites a newer one."""
        self._remember(name, state)
        await ensure_schema(self.db)

        async def write(conn: AsyncConn) -> None:
            await conn.execute(
                "INSERT INTO lcha_breakers AS b (name, state, open_until, trips, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " state = EXCLUDED.state, open_until = EXCLUDED.open_until,"
                " trips = EXCLUDED.trips, updated_at = EXCLUDED.updated_at, probe_until = NULL"
                " WHERE b.updated_at < EXCLUDED.updated_at",
                (self.namespace + name, _state_text(state.state), state.open_until, state.trips,
                 state.updated_at),
            )

        try:
            await asyncio.wait_for(on_writer(self.db, write), self.timeout_s)
        except _FAILED as exc:
            log.warning("breaker store: save of %s failed (%s); kept locally", name, exc)

    async def claim_probe(self, name: str, now: float, lease_s: float) -> bool:
        """Claim the half-open probe of ``name``: True for the first replica to ask once the
        shared open interval is over, while nobody holds an unexpired claim.

        Raises what the database raises when it cannot answer (the breaker then probes
        locally: one probe per replica is a fine fallback for a database outage).
        """
        await ensure_schema(self.db)

        async def claim(conn: AsyncConn) -> bool:
            cur = await conn.execute(
                "INSERT INTO lcha_breakers AS b"
                " (name, state, open_until, trips, updated_at, probe_until)"
                " VALUES (%s, 'half_open', 0, 0, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " probe_until = EXCLUDED.probe_until"
                " WHERE NOT (b.state = 'open' AND b.open_until > %s)"
                " AND (b.probe_until IS NULL OR b.probe_until <= %s)"
                " RETURNING 1",
                (self.namespace + name, now, now + lease_s, now, now),
            )
            return await cur.fetchone() is not None

        granted = await asyncio.wait_for(on_writer(self.db, claim), self.timeout_s)
        if granted:
            self._cache.pop(name, None)
        return granted
