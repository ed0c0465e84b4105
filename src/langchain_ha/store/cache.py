"""LLM caches in PostgreSQL: exact match, semantic (pgvector), and stale-if-error.

:class:`PgCache` keys an answer by ``sha256(llm_string, prompt)``; :class:`SemanticCache`
returns the closest cached prompt for the same ``llm_string`` whose cosine similarity is at
least ``threshold``.  Both honour ``ttl_s`` on normal lookups, and both keep expired entries
so that, when every provider is down, :meth:`alookup_stale` can still answer;
:func:`aserve_stale` does that lookup and records the answer as degraded ``cache``.
Expired rows are removed by :meth:`apurge` (older than a retention you choose).

Lookups read from standbys (falling back to the primary); updates write to the primary.
A cache never fails a request: a lookup that fails or takes longer than ``timeout_s`` (a
failover, a frozen member) is a miss, and an update that fails is logged and dropped.

Generations that call tools are not stored unless ``cache_tool_calls=True``: a cached tool
call carries the id of the call it answered, and an agent replaying it would hand a new run
an old call's id (a side effect keyed by it would then not happen).  Nor are a
:class:`~langchain_ha.resilience.chat.ResilientChatModel`'s answers from a fallback provider
or refusals: served later, they would pass a degraded answer off as a full one.

``events`` (:class:`CacheEvents`, e.g. :class:`~langchain_ha.resilience.prometheus.
PrometheusEvents`) counts lookups by outcome (``hit``, ``miss``, ``error``) and updates
(``stored``, ``skipped``, ``error``) under the cache's ``label``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import warnings
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps, loads
from langchain_core.outputs import ChatGeneration, Generation
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
T = TypeVar("T")

_MISS_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, UndefinedTable, TimeoutError)


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


class CacheEvents(Protocol):
    """Where a cache reports its lookups and updates (bounded outcome names)."""

    def on_cache_lookup(self, cache: str, outcome: str) -> None: ...

    def on_cache_update(self, cache: str, outcome: str) -> None: ...


def _not_cacheable(value: RETURN_VAL_TYPE, cache_tool_calls: bool) -> bool:
    """Generations a cache must not keep: tool calls (unless asked), and a router's answer
    from a fallback or a refusal (``response_metadata["lcha"]``), which served later would
    pass a degraded answer off as a full one once the first provider is back."""
    for g in value:
        if not isinstance(g, ChatGeneration):
            continue
        if not cache_tool_calls and getattr(g.message, "tool_calls", None):
            return True
        lcha = g.message.response_metadata.get("lcha") or {}
        if lcha.get("fallback") or lcha.get("refusal"):
            return True
    return False


class _PgBackedCache(BaseCache):
    """What both caches share: the sync side (thin wrappers over the async methods), the
    lookup deadline, the tool-call rule and the events.  Subclasses implement ``_get`` and
    ``_put``."""

    def _setup(self, *, label: str, events: CacheEvents | None, cache_tool_calls: bool,
               timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.label = label
        self.events = events
        self.cache_tool_calls = cache_tool_calls
        self.timeout_s = timeout_s

    async def _get(self, prompt: str, llm_string: str, stale: bool) -> RETURN_VAL_TYPE | None:
        raise NotImplementedError

    async def _put(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> bool:
        raise NotImplementedError

    async def _within(self, what: str, call: Awaitable[T]) -> tuple[bool, T | None]:
        """``call``'s result within ``timeout_s``; ``(False, None)`` when the database could
        not serve it (logged: the caller counts it)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return True, await call
        except _MISS_ERRORS as exc:
            log.warning("cache %s: %s failed (%s)", self.label, what, type(exc).__name__)
            return False, None

    async def _lookup(self, prompt: str, llm_string: str, stale: bool) -> RETURN_VAL_TYPE | None:
        ok, found = await self._within("lookup (a miss)", self._get(prompt, llm_string, stale))
        self._lookup_was("error" if not ok else "miss" if found is None else "hit")
        return found

    def _lookup_was(self, outcome: str) -> None:
        if self.events is not None:
            self.events.on_cache_lookup(self.label, outcome)

    def _update_was(self, outcome: str) -> None:
        if self.events is not None:
            self.events.on_cache_update(self.label, outcome)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The entry for ``prompt`` younger than ``ttl_s``, else ``None`` (also when the
        database cannot answer within ``timeout_s``)."""
        return await self._lookup(prompt, llm_string, stale=False)

    async def alookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The entry for ``prompt`` whatever its age (for when every provider is down)."""
        return await self._lookup(prompt, llm_string, stale=True)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store (or refresh) the generations for ``prompt`` (tool calls, fallbacks' answers
        and refusals are skipped, see the module doc); a failed write is logged, never raised
        (the answer it would cache has been given)."""
        if _not_cacheable(return_val, self.cache_tool_calls):
            self._update_was("skipped")
            return
        ok, stored = await self._within("update (not cached)",
                                        self._put(prompt, llm_string, return_val))
        self._update_was("error" if not ok else "stored" if stored else "skipped")

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return run_sync(self.alookup(prompt, llm_string))

    def lookup_stale(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return run_sync(self.alookup_stale(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        run_sync(self.aupdate(prompt, llm_string, return_val))

    def clear(self, **kwargs: Any) -> None:
        run_sync(self.aclear(**kwargs))


class PgCache(_PgBackedCache):
    """Exact-match LLM cache (``lcha_llm_cache``), e.g. ``ResilientChatModel(cache=...)`` or
    ``router_from_env(cache=stores.cache)``.

    Args:
        db: the database (a :class:`~langchain_ha.store.connect.Database`).
        ttl_s: how long an entry is fresh (None: for ever); older ones serve only
            :meth:`alookup_stale`.
        label: the cache's name in events.
        events: where lookups and updates are counted.
        cache_tool_calls: also store generations that call tools (see the module doc).
        timeout_s: how long a lookup or update may take before it is a miss / dropped.
    """

    def __init__(self, db: ConnectionSource, *, ttl_s: float | None = 3600.0,
                 label: str = "llm", events: CacheEvents | None = None,
                 cache_tool_calls: bool = False, timeout_s: float = 1.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._setup(label=label, events=events, cache_tool_calls=cache_tool_calls,
                    timeout_s=timeout_s)

    async def _get(self, prompt: str, llm_string: str, stale: bool) -> RETURN_VAL_TYPE | None:
        ttl, params = _ttl_clause(self.ttl_s, stale)
        stmt = sql.SQL("SELECT generations FROM lcha_llm_cache WHERE key = %s AND {}").format(ttl)

        async def read(conn: AsyncConn) -> str | None:
            cur = await conn.execute(stmt, [cache_key(prompt, llm_string), *params])
            row = await cur.fetchone()
            return row[0] if row else None

        text = await on_reader(self.db, read)
        return _load(text) if text is not None else None

    async def _put(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> bool:
        await ensure_schema(self.db)

        async def write(conn: AsyncConn) -> None:
            await conn.execute(
                "INSERT INTO lcha_llm_cache (key, llm_string, prompt, generations)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                " generations = EXCLUDED.generations, created_at = now()",
                (cache_key(prompt, llm_string), llm_string, prompt, _dump(return_val)),
            )

        await on_writer(self.db, write)
        return True

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



class SemanticCache(_PgBackedCache):
    """Cache hit for a *similar* prompt: best entry with cosine similarity >= ``threshold``
    (its own table per ``name``; the other arguments as :class:`PgCache`'s)."""

    def __init__(
        self,
        db: ConnectionSource,
        embeddings: Embeddings,
        *,
        dimensions: int,
        threshold: float = 0.95,
        ttl_s: float | None = 3600.0,
        name: str = "default",
        events: CacheEvents | None = None,
        cache_tool_calls: bool = False,
        timeout_s: float = 2.0,
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
        self._setup(label=f"semantic:{name}", events=events, cache_tool_calls=cache_tool_calls,
                    timeout_s=timeout_s)

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

        found = await on_reader(self.db, read)
        if found is None or found[1] < self.threshold:
            return None
        return _load(found[0])

    async def _put(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> bool:
        vector = await self._embed(prompt)
        if vector is None:
            return False  # no embedding to find it by
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
        return True

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
