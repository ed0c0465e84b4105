"""The support bot's state in the HA PostgreSQL cluster: vectors, chat history, breakers and
the LLM cache.

One :class:`~langchain_ha.store.connect.Database` (writer pool on the primary, reader pool on
the standbys), opened lazily on the loop that serves the bot.  The corpus is upserted into a
pgvector collection on first use (idempotent by id, so every replica may do it); chat history
appends are idempotent per request key (:class:`~langchain_ha.store.history.PgChatMessageHistory`).
The providers' circuit breakers share their state through ``lcha_breakers``
(:class:`~langchain_ha.store.breakers.PgBreakerStore`): reads come from a short local cache and
happen off the request path, so a slow or lost database never slows an answer.
"""

from __future__ import annotations

import asyncio

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from langchain_ha.demo.corpus import CorpusRetriever
from langchain_ha.store.breakers import PgBreakerStore
from langchain_ha.store.cache import CacheEvents, PgCache
from langchain_ha.store.connect import Database
from langchain_ha.store.history import PgChatMessageHistory
from langchain_ha.store.vectors import PgVectorStore


class PgBackend:
    """Database-backed vectors and history for the support bot."""

    def __init__(self, writer: str, reader: str | None, embeddings: Embeddings, *,
                 dimensions: int, collection: str = "support_faq") -> None:
        # Short waits: a dead member must cost a breaker check, not the request's deadline.
        self.db = Database.from_conninfo(writer, reader, connect_timeout_s=1.0,
                                         pool_timeout_s=1.0)
        self.store = PgVectorStore(self.db, embeddings, dimensions=dimensions,
                                   collection=collection)
        self.breakers = PgBreakerStore(self.db, namespace=f"{collection}:")
        self._opened = False
        self._lock: asyncio.Lock | None = None

    async def open(self) -> None:
        """Open the pools once, on the current (serving) loop; cheap after the first call."""
        if self._opened:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._opened:
                await self.db.open()
                self._opened = True

    async def close(self) -> None:
        """Close the pools (if opened)."""
        if self._opened:
            await self.db.close()
            self._opened = False

    def cache(self, ttl_s: float, events: CacheEvents | None = None) -> PgCache:
        """The exact-match LLM cache in the cluster (``lcha_llm_cache``)."""
        return PgCache(self.db, ttl_s=ttl_s, events=events)

    def history(self, session_id: str) -> BaseChatMessageHistory:
        """The chat history of ``session_id`` in the database."""
        return PgChatMessageHistory(self.db, session_id)

    def retriever(self, docs: tuple[Document, ...], *, k: int = 3) -> CorpusRetriever:
        """Vector search (full-text search while embeddings are down) over ``docs`` in the
        cluster; keyword search over the shipped corpus while the database is unreachable,
        recorded as ``retrieval``."""
        return CorpusRetriever(store=self.store, docs=docs, k=k, prepare=self.open,
                               fallback_component="retrieval", search_unindexed=True)
