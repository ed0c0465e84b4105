"""LLM caches in PostgreSQL: exact match, semantic (pgvector), and stale-if-error.

:class:`PgCache` keys an answer by ``sha256(llm_string, prompt)``; :class:`SemanticCache`
returns the closest cached prompt for the same ``llm_string`` whose cosine similarity is at
least ``threshold``.  Both honour ``ttl_s`` on normal lookups, and both keep expired entries
so that, when every provider is down, :meth:`alookup_stale` can still answer;
:func:`aserve_stale` does that lookup and records the answer as degraded ``cache``.
Expired rows are removed by :meth:`apurge` (older than a retention you choose).

Lookups read from standbys (falling back to the primary); updates write to the primary.
A cache never fails a request: database or embedding errors during lookup are a miss.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps, loads
from langchain_core.outputs import Generation
from psycopg import sql
from psycopg.errors import UndefinedTable

from langchain_ha._sync import run_sync
from langchain_ha.resilience.degrade import record_degraded
from langchain_ha.store._db import (
    UNAVAILABLE,
    AsyncConn,
    ConnectionSource,
    on_reader,
    on_writer,
    vector_literal,
)
from langchain_ha.store.schema import ensure_schema, ensure_semantic, semantic_table

log = logging.getLogger(__name__)

_MISS_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, UndefinedTable)


def cache_key(prompt: str, llm_string: str) -> str:
    """The exact-match key of a (prompt, llm_string) pair."""
    h = hashlib.sha256()
    h.update(llm_string.encode())
    h.update(b"\x00")
    h.update(prompt.encode())
    return h.hexdigest()


def _dump(value: RETURN_VAL_TYPE) -> str:
    return dumps(list(value))


def _load(text: str) -> list[Generation]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(loads(text, allowed_objects="core"))


def _ttl_clause(ttl_s: float | None, stale: bool) -> tuple[sql.Composable, list[Any]]:
    if stale or ttl_s is None:
        return sql.SQL("TRUE"), []
    return sql.SQL("created_at > now() - make_interval(secs => %s)"), [float(ttl_s)]


class StaleCapable(Protocol):
    """A cache that can return an entry past its ttl."""

    async def alookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None: ...


class _SyncCache(BaseCache):
    """The sync side of a LangChain cache: thin wrappers over the async methods."""

    async def alookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        raise NotImplementedError

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return run_sync(self.alookup(prompt, llm_string))

    def lookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return run_sync(self.alookup_stale(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        run_sync(self.aupdate(prompt, llm_string, return_val))

    def clear(self, **kwargs: Any) -> None:
        run_sync(self.aclear(**kwargs))


class PgCache(_SyncCache):
    """Exact-match LLM cache (``lcha_llm_cache``)."""

    def __init__(self, db: ConnectionSource, *, ttl_s: float | None = 3600.0) -> None:
        self.db = db
        self.ttl_s = ttl_s

    async def _get(self, prompt: str, llm_string: str, stale: bool) -> RETURN_VAL_TYPE | None:
        ttl, params = _ttl_clause(self.ttl_s, stale)
        stmt = sql.SQL("SELECT generations FROM lcha_llm_cache WHERE key = %s AND {}").format(ttl)

        async def read(conn: AsyncConn) -> str | None:
            cur = await conn.execute(stmt, [cache_key(prompt, llm_string), *params])
            row = await cur.fetchone()
            return row[0] if row else None

        try:
            text = await on_reader(self.db, read)
        except _MISS_ERRORS as exc:
            log.warning("cache lookup failed (%s): treated as a miss", type(exc).__name__)
            return None
        return _load(text) if text is not None else None

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations if present and younger than ``ttl_s``."""
        return await self._get(prompt, llm_string, stale=False)

    async def alookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations whatever their age (for when every provider is down)."""
        return await self._get(prompt, llm_string, stale=True)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store (or refresh) the generations for this prompt."""
        await ensure_schema(self.db)

        async def write(conn: AsyncConn) -> None:
            await conn.execute(
                "INSERT INTO lcha_llm_cache (key, llm_string, prompt, generations)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                " generations = EXCLUDED.generations, created_at = now()",
                (cache_key(prompt, llm_string), llm_string, prompt, _dump(return_val)),
            )

        await on_writer(self.db, write)

    async def aclear(self, **kwargs: Any) -> None:
        """Delete every entry."""
        await ensure_schema(self.db)

        async def delete(conn: AsyncConn) -> None:
            await conn.execute("DELETE FROM lcha_llm_cache")

        await on_writer(self.db, delete)

    async def apurge(self, older_than_s: float) -> int:
        """Delete entries older than ``older_than_s``; return how many."""
        await ensure_schema(self.db)

        async def delete(conn: AsyncConn) -> int:
            cur = await conn.execute(
                "DELETE FROM lcha_llm_cache WHERE created_at < now() - make_interval(secs => %s)",
                (float(older_than_s),),
            )
            return cur.rowcount

        return await on_writer(self.db, delete)



class SemanticCache(_SyncCache):
    """Cache hit for a *similar* prompt: best entry with cosine similarity >= ``threshold``."""

    def __init__(
        self,
        db: ConnectionSource,
        embeddings: Embeddings,
        *,
        dimensions: int,
        threshold: float = 0.95,
        ttl_s: float | None = 3600.0,
        name: str = "default",
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold!r}")
        self.db = db
        self.embeddings = embeddings
        self.dimensions = dimensions
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.name = name
        self._table = sql.Identifier(semantic_table(name))

    async def _embed(self, prompt: str) -> list[float] | None:
        try:
            return await self.embeddings.aembed_query(prompt)
        except Exception as exc:
            log.warning("semantic cache: embedding failed (%s)", type(exc).__name__)
            return None

    async def _get(self, prompt: str, llm_string: str, stale: bool) -> RETURN_VAL_TYPE | None:
        ttl, ttl_params = _ttl_clause(self.ttl_s, stale)
        vector = await self._embed(prompt)
        if vector is None:
            # No embedding (provider down): the exact prompt can still be found by key.
            stmt = sql.SQL("SELECT generations, 1.0 FROM {t} WHERE key = %s AND {ttl}").format(
                t=self._table, ttl=ttl
            )
            args: list[Any] = [cache_key(prompt, llm_string), *ttl_params]
        else:
            stmt = sql.SQL(
                "SELECT generations, 1 - (embedding <=> %s::vector) AS sim FROM {t}"
                " WHERE llm_string = %s AND {ttl} ORDER BY embedding <=> %s::vector LIMIT 1"
            ).format(t=self._table, ttl=ttl)
            lit = vector_literal(vector)
            args = [lit, llm_string, *ttl_params, lit]

        async def read(conn: AsyncConn) -> tuple[str, float] | None:
            await conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            cur = await conn.execute(stmt, args)
            row = await cur.fetchone()
            return (row[0], float(row[1])) if row else None

        try:
            found = await on_reader(self.db, read)
        except _MISS_ERRORS as exc:
            log.warning("semantic cache lookup failed (%s): a miss", type(exc).__name__)
            return None
        if found is None or found[1] < self.threshold:
            return None
        return _load(found[0])

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Best fresh entry at least ``threshold`` similar to ``prompt``, else ``None``."""
        return await self._get(prompt, llm_string, stale=False)

    async def alookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Like :meth:`alookup`, ignoring ``ttl_s``."""
        return await self._get(prompt, llm_string, stale=True)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations with the prompt's embedding (skipped if it cannot be embedded)."""
        vector = await self._embed(prompt)
        if vector is None:
            return
        await ensure_semantic(self.db, self.name, self.dimensions)
        stmt = sql.SQL(
            "INSERT INTO {t} (key, llm_string, prompt, embedding, generations)"
            " VALUES (%s, %s, %s, %s::vector, %s) ON CONFLICT (key) DO UPDATE SET"
            " generations = EXCLUDED.generations, embedding = EXCLUDED.embedding,"
            " created_at = now()"
        ).format(t=self._table)
        args = (
            cache_key(prompt, llm_string),
            llm_string,
            prompt,
            vector_literal(vector),
            _dump(return_val),
        )

        async def write(conn: AsyncConn) -> None:
            await conn.execute(stmt, args)

        await on_writer(self.db, write)

    async def aclear(self, **kwargs: Any) -> None:
        """Delete every entry."""
        await ensure_semantic(self.db, self.name, self.dimensions)
        stmt = sql.SQL("DELETE FROM {t}").format(t=self._table)

        async def delete(conn: AsyncConn) -> None:
            await conn.execute(stmt)

        await on_writer(self.db, delete)



async def aserve_stale(
    caches: Sequence[StaleCapable], prompt: str, llm_string: str
) -> RETURN_VAL_TYPE | None:
    """Stale-if-error: the first cache's entry whatever its age, recorded as degraded ``cache``.

    Call this when every provider failed; ``None`` means nothing was ever cached.
    """
    for cache in caches:
        found = await cache.alookup_stale(prompt, llm_string)
        if found is not None:
            record_degraded("cache")
            return found
    return None
