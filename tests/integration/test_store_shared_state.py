"""Shared breaker state and idempotent responses in PostgreSQL, seen by two replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from langchain_ha.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    SharedBreakerState,
)
from langchain_ha.store.breakers import PgBreakerStore
from langchain_ha.store.idempotency import PgIdempotencyStore, StoredResponse


async def test_breaker_store_shared_with_short_read_cache(store_db: Any) -> None:
    name = f"prov-{uuid.uuid4().hex[:8]}"
    replica_a = PgBreakerStore(store_db, cache_ttl_s=0.3)
    replica_b = PgBreakerStore(store_db, cache_ttl_s=0.3)
    assert await replica_b.load(name) is None

    now = time.time()
    opened = SharedBreakerState(BreakerState.OPEN, now + 30, 1, now)
    await replica_a.save(name, opened)
    # B cached "nothing" a moment ago: the hot path does not hit the database per call.
    reads = replica_b.db_reads
    for _ in range(50):
        assert await replica_b.load(name) is None
    assert replica_b.db_reads == reads
    await asyncio.sleep(0.35)
    assert await replica_b.load(name) == opened
    assert replica_b.db_reads == reads + 1

    # An older update never overwrites a newer one.
    await replica_b.save(name, SharedBreakerState(BreakerState.CLOSED, 0.0, 0, now - 10))
    fresh = PgBreakerStore(store_db)
    assert await fresh.load(name) == opened
    closed = SharedBreakerState(BreakerState.CLOSED, 0.0, 1, now + 1)
    await replica_b.save(name, closed)
    assert await PgBreakerStore(store_db).load(name) == closed


async def test_breaker_trip_reaches_other_replica(store_db: Any) -> None:
    name = f"prov-{uuid.uuid4().hex[:8]}"
    config = BreakerConfig(sync_interval_s=0.05)
    a = CircuitBreaker(name, config, store=PgBreakerStore(store_db, cache_ttl_s=0.1))
    b = CircuitBreaker(name, config, store=PgBreakerStore(store_db, cache_ttl_s=0.1))
    a.force_open(30)
    deadline = time.monotonic() + 5
    while b.state is not BreakerState.OPEN:
        assert time.monotonic() < deadline, "replica B never saw the trip"
        b.try_acquire()
        await asyncio.sleep(0.05)
    assert b.try_acquire() is None
    assert 20 < (b.retry_in() or 0) <= 30


async def test_idempotency_claim_put_get_wait(store_db: Any) -> None:
    a, b = PgIdempotencyStore(store_db), PgIdempotencyStore(store_db)
    key = f"idem-{uuid.uuid4()}"
    claims = await asyncio.gather(*(s.claim(key, ttl_s=30) for s in (a, b, a, b)))
    assert claims.count(True) == 1
    assert await b.get(key) is None

    async def finish() -> None:
        await asyncio.sleep(0.2)
        await a.put(key, 200, b'{"answer": "x"}', {"content-type": "application/json"}, 60)

    waiter = asyncio.create_task(b.wait(key, timeout_s=5))
    await finish()
    expected = StoredResponse(200, b'{"answer": "x"}', {"content-type": "application/json"})
    assert await waiter == expected
    assert await a.get(key) == expected
    assert not await b.claim(key, ttl_s=30)  # answered: nobody recomputes

    # A claimer that crashed: its claim expires and another replica may claim.
    crashed = f"idem-{uuid.uuid4()}"
    assert await a.claim(crashed, ttl_s=0.2)
    assert not await b.claim(crashed, ttl_s=5)
    await asyncio.sleep(0.3)
    assert await b.claim(crashed, ttl_s=5)
    await b.release(crashed)
    assert await a.claim(crashed, ttl_s=5)
    assert await a.wait(f"idem-{uuid.uuid4()}", timeout_s=0.2) is None

    # A stored response expires with its ttl.
    short = f"idem-{uuid.uuid4()}"
    await a.put(short, 201, b"", {}, 0.2)
    assert (await b.get(short)) == StoredResponse(201, b"", {})
    await asyncio.sleep(0.3)
    assert await b.get(short) is None


async def test_schema_apply_is_idempotent_under_concurrency(store_db: Any) -> None:
    from langchain_ha.store import schema

    tags = [f"again-{uuid.uuid4()}" for _ in range(4)]
    await asyncio.gather(*(schema._ensure(store_db, t, list(schema.BASE_DDL)) for t in tags))
    await schema.ensure_schema(store_db)
    async with store_db.writer() as conn:
        cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = await cur.fetchone()
    assert row is not None and row[0] >= "0.8"
