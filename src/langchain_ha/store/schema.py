"""Every table the stores use, created idempotently once per process.

DDL runs on the writer inside one transaction holding a transaction-level advisory lock, so
replicas starting together do not race on ``CREATE EXTENSION``/``CREATE TABLE``.  All
statements are ``IF NOT EXISTS``: applying the schema again is a no-op.  Per-collection tables
(vectors, semantic cache) are created by :func:`ensure_collection` / :func:`ensure_semantic`.
"""

from __future__ import annotations

import weakref
from typing import Any

from psycopg import sql

from langchain_ha.store._db import AsyncConn, ConnectionSource, on_writer, valid_name

Stmt = sql.SQL | sql.Composed | str

# Arbitrary constant: the advisory lock id that serialises schema changes.
SCHEMA_LOCK_ID = 0x4C434841  # "LCHA"

BASE_DDL: tuple[str, ...] = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE TABLE IF NOT EXISTS lcha_chat_history (
        id bigserial PRIMARY KEY,
        session_id text NOT NULL,
        request_key text NOT NULL,
        seq integer NOT NULL,
        message jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (session_id, request_key, seq))""",
    "CREATE INDEX IF NOT EXISTS lcha_chat_history_session ON lcha_chat_history (session_id, id)",
    """CREATE TABLE IF NOT EXISTS lcha_llm_cache (
        key text PRIMARY KEY,
        llm_string text NOT NULL,
        prompt text NOT NULL,
        generations text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS lcha_breakers (
        name text PRIMARY KEY,
        state text NOT NULL,
        open_until double precision NOT NULL,
        trips integer NOT NULL,
        updated_at double precision NOT NULL)""",
    # Who holds the half-open probe, until when (wall time); NULL: nobody.  Added later than
    # the table, so existing databases get the column here.
    "ALTER TABLE lcha_breakers ADD COLUMN IF NOT EXISTS probe_until double precision",
    """CREATE TABLE IF NOT EXISTS lcha_idempotency (
        key text PRIMARY KEY,
        status integer,
        body bytea,
        headers jsonb,
        fingerprint text,
        claimed_until timestamptz,
        expires_at timestamptz NOT NULL)""",
    # Tables made before the request fingerprint: add the column (nullable, no default, so
    # PostgreSQL changes the catalogue only, no rewrite), and only when missing, so a start
    # does not take the table's ACCESS EXCLUSIVE lock once it is there; a bounded wait for
    # that lock, so a long transaction on the table cannot queue every request behind it.
    """DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                       WHERE attrelid = 'lcha_idempotency'::regclass
                         AND attname = 'fingerprint' AND NOT attisdropped) THEN
            PERFORM set_config('lock_timeout', '5s', true);
            ALTER TABLE lcha_idempotency ADD COLUMN fingerprint text;
        END IF;
    END $$""",
    """CREATE TABLE IF NOT EXISTS lcha_tasks (
        id bigserial PRIMARY KEY,
        kind text NOT NULL,
        payload jsonb NOT NULL,
        idempotency_key text UNIQUE,
        status text NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'done', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL DEFAULT 5,
        run_after timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz,
        lease_token uuid,
        worker text,
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz)""",
    """CREATE INDEX IF NOT EXISTS lcha_tasks_ready ON lcha_tasks (run_after, id)
        WHERE status = 'queued'""",
    """CREATE INDEX IF NOT EXISTS lcha_tasks_leased ON lcha_tasks (lease_until)
        WHERE status = 'running'""",
    """CREATE TABLE IF NOT EXISTS lcha_task_effects (
        effect_key text PRIMARY KEY,
        task_id bigint,
        created_at timestamptz NOT NULL DEFAULT now())""",
)

_applied: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


async def _locked(conn: AsyncConn, statements: list[Stmt]) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
    for stmt in statements:
        await conn.execute(stmt if isinstance(stmt, sql.Composable) else sql.SQL(stmt))


async def _ensure(db: ConnectionSource, tag: str, statements: list[Stmt]) -> None:
    """Apply ``statements`` once per (db, tag) in this process.

    Two coroutines racing here both apply: harmless, the DDL is idempotent and serialised
    by the advisory lock (no asyncio lock, which would tie this module to one event loop).
    """
    try:
        done = _applied.setdefault(db, set())
    except TypeError:  # not weak-referenceable: apply every time (idempotent anyway)
        done = set()
    if tag in done:
        return

    async def apply(conn: AsyncConn) -> None:
        await _locked(conn, statements)

    await on_writer(db, apply)
    done.add(tag)


async def ensure_schema(db: ConnectionSource) -> None:
    """Create the extension and the shared tables (history, cache, breakers, tasks...)."""
    await _ensure(db, "base", list(BASE_DDL))


def collection_table(collection: str) -> str:
    """Table name of a vector collection (``collection`` is validated)."""
    return f"lcha_vectors_{valid_name(collection)}"


def semantic_table(name: str) -> str:
    """Table name of a semantic cache (``name`` is validated)."""
    return f"lcha_semcache_{valid_name(name, 'semantic cache')}"


def _valid_dims(dimensions: int) -> int:
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 16000:
        raise ValueError(f"invalid dimensions {dimensions!r}: expected an integer 1..16000")
    return dimensions


async def ensure_collection(
    db: ConnectionSource, collection: str, dimensions: int, fts_config: str = "english"
) -> None:
    """Create a vector collection table: HNSW (cosine) index, generated tsvector + GIN index."""
    table = sql.Identifier(collection_table(collection))
    dims = sql.Literal(_valid_dims(dimensions))
    cfg = sql.Literal(valid_name(fts_config, "text search configuration"))
    stmts: list[Stmt] = [
        "CREATE EXTENSION IF NOT EXISTS vector",
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " id text PRIMARY KEY,"
            " content text NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
            " embedding vector({d}) NOT NULL,"
            " tsv tsvector GENERATED ALWAYS AS (to_tsvector({c}::regconfig, content)) STORED,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(t=table, d=dims, c=cfg),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
        ).format(i=sql.Identifier(f"{collection_table(collection)}_hnsw"), t=table),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
            i=sql.Identifier(f"{collection_table(collection)}_fts"), t=table
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (metadata jsonb_path_ops)").format(
            i=sql.Identifier(f"{collection_table(collection)}_meta"), t=table
        ),
    ]
    await _ensure(db, f"vectors:{collection}", stmts)


async def ensure_semantic(db: ConnectionSource, name: str, dimensions: int) -> None:
    """Create a semantic-cache table with an HNSW (cosine) index."""
    tname = semantic_table(name)
    table = sql.Identifier(tname)
    stmts: list[Stmt] = [
        "CREATE EXTENSION IF NOT EXISTS vector",
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " key text PRIMARY KEY,"
            " llm_string text NOT NULL,"
            " prompt text NOT NULL,"
            " embedding vector({d}) NOT NULL,"
            " generations text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(t=table, d=sql.Literal(_valid_dims(dimensions))),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
        ).format(i=sql.Identifier(f"{tname}_hnsw"), t=table),
    ]
    await _ensure(db, f"semantic:{name}", stmts)
