"""Idempotent responses in PostgreSQL: the request fingerprint beside each answer, and a table
made by an earlier release (without the column) migrated in place."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from langchain_ha.store.connect import Database
from langchain_ha.store.idempotency import PgIdempotencyStore, StoredResponse


async def test_idempotency_fingerprint_and_an_old_table_migrated(store_conninfo: str) -> None:
    # A table as an earlier release made it (no fingerprint), with an answer in it, in a
    # database of its own.
    name = f"lcha_migrate_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(store_conninfo, autocommit=True) as admin:
        # template0: CREATE DATABASE from template1 fails while anyone is connected to it
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    conninfo = make_conninfo(store_conninfo, dbname=name)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE lcha_idempotency (key text PRIMARY KEY, status integer,"
                " body bytea, headers jsonb, claimed_until timestamptz,"
                " expires_at timestamptz NOT NULL)")
            await conn.execute("INSERT INTO lcha_idempotency (key, status, body, headers,"
                               " expires_at) VALUES ('old', 200, 'x', '{}', now() + '1h')")
        db = Database.from_conninfo(conninfo, min_size=1, max_size=2)
        await db.open()
        try:
            store = PgIdempotencyStore(db)
            assert await store.get("old") == StoredResponse(200, b"x", {}, None)
            await store.put("new", 200, b"y", {"x-lcha-degraded": ""}, 60, fingerprint="fp-1")
            assert await store.get("new") == StoredResponse(
                200, b"y", {"x-lcha-degraded": ""}, "fp-1")
            assert await store.claim("new", ttl_s=5) is False  # answered: nobody recomputes
        finally:
            await db.close()
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            cur = await conn.execute("SELECT count(*) FROM information_schema.columns WHERE"
                                     " table_name = 'lcha_idempotency'"
                                     " AND column_name = 'fingerprint'")
            assert await cur.fetchone() == (1,)
    finally:
        async with await psycopg.AsyncConnection.connect(store_conninfo,
                                                         autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
