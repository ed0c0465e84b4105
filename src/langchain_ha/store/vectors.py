"""A LangChain ``VectorStore`` on pgvector, served from standbys, with a full-text fallback.

One table per collection (``lcha_vectors_<collection>``): ``id`` (primary key), ``content``,
``metadata`` (jsonb), ``embedding`` (HNSW index, cosine) and a generated ``tsv`` column (GIN).

- Writes go to the primary and are idempotent by id (``ON CONFLICT (id) DO UPDATE``).
- Searches run on the reader pool (standbys) and fall back to the writer.
- When the query cannot be embedded (provider down), search uses PostgreSQL full-text search
  (``websearch_to_tsquery``) and records the answer as degraded in ``embeddings``.
- Filters are compiled by :mod:`langchain_ha.store.filters`: bound parameters only.

Sync methods are thin wrappers running the async core on the shared background loop; use them
with a ``Database`` opened on that loop, or prefer the async methods.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from psycopg import sql
from psycopg.errors import UndefinedTable
from psycopg.types.json import Jsonb

from langchain_ha._sync import run_sync
from langchain_ha.resilience.degrade import record_degraded
from langchain_ha.store._db import (
    AsyncConn,
    ConnectionSource,
    on_reader,
    on_writer,
    valid_name,
    vector_literal,
)
from langchain_ha.store.filters import compile_filter
from langchain_ha.store.schema import collection_table, ensure_collection

log = logging.getLogger(__name__)

MAX_K = 1000


class PgVectorStore(VectorStore):
    """pgvector collection (HNSW, cosine) with idempotent upserts and an FTS fallback."""

    def __init__(
        self,
        db: ConnectionSource,
        embeddings: Embeddings,
        *,
        dimensions: int,
        collection: str = "default",
        fts_config: str = "english",
        ef_search: int = 64,
    ) -> None:
        self.db = db
        self._embeddings = embeddings
        self.dimensions = dimensions
        self.collection = valid_name(collection)
        self.fts_config = valid_name(fts_config, "text search configuration")
        self.ef_search = ef_search
        self._table = sql.Identifier(collection_table(collection))

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    async def ainit(self) -> None:
        """Create the collection table and its indexes (idempotent; done once per process)."""
        await ensure_collection(self.db, self.collection, self.dimensions, self.fts_config)

    # -- writes -----------------------------------------------------------------------------

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert ``texts``; re-adding an id replaces its row (idempotent)."""
        texts = list(texts)
        if not texts:
            return []
        metadatas = metadatas or [{} for _ in texts]
        ids = [i or str(uuid.uuid4()) for i in (ids or [None] * len(texts))]  # type: ignore[list-item]
        if not len(metadatas) == len(ids) == len(texts):
            raise ValueError("texts, metadatas and ids must have the same length")
        vectors = await self._embeddings.aembed_documents(texts)
        for vec in vectors:
            if len(vec) != self.dimensions:
                raise ValueError(
                    f"embedding has {len(vec)} dimensions, collection expects {self.dimensions}"
                )
        await self.ainit()
        stmt = sql.SQL(
            "INSERT INTO {t} (id, content, metadata, embedding) VALUES (%s, %s, %s, %s::vector)"
            " ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content,"
            " metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, updated_at = now()"
        ).format(t=self._table)
        rows = [
            (i, t, Jsonb(m or {}), vector_literal(v))
            for i, t, m, v in zip(ids, texts, metadatas, vectors, strict=True)
        ]

        async def write(conn: AsyncConn) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(stmt, rows)

        await on_writer(self.db, write)
        return ids

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        return run_sync(self.aadd_texts(texts, metadatas, ids=ids, **kwargs))

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete rows by id (``ids=None`` deletes nothing and returns ``False``)."""
        if not ids:
            return False
        stmt = sql.SQL("DELETE FROM {t} WHERE id = ANY(%s)").format(t=self._table)

        async def delete(conn: AsyncConn) -> None:
            await conn.execute(stmt, (list(ids),))

        try:
            await on_writer(self.db, delete)
        except UndefinedTable:
            return False
        return True

    async def adelete_by_filter(
        self, filter: dict[str, Any], *, keep_ids: Sequence[str] = ()
    ) -> int:
        """Delete rows matching ``filter`` except ``keep_ids``; return how many."""
        if not filter:
            raise ValueError("adelete_by_filter needs a non-empty filter")
        cond, params = compile_filter(filter)
        stmt = sql.SQL("DELETE FROM {t} WHERE {cond} AND NOT (id = ANY(%s))").format(
            t=self._table, cond=cond
        )

        async def delete(conn: AsyncConn) -> int:
            cur = await conn.execute(stmt, [*params, list(keep_ids)])
            return cur.rowcount

        try:
            return await on_writer(self.db, delete)
        except UndefinedTable:
            return 0

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        return run_sync(self.adelete(ids, **kwargs))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents with these ids (order of the rows found, missing ids skipped)."""
        stmt = sql.SQL("SELECT id, content, metadata FROM {t} WHERE id = ANY(%s)").format(
            t=self._table
        )

        async def read(conn: AsyncConn) -> list[Document]:
            cur = await conn.execute(stmt, (list(ids),))
            return [
                Document(id=r[0], page_content=r[1], metadata=r[2]) for r in await cur.fetchall()
            ]

        try:
            return await on_reader(self.db, read)
        except UndefinedTable:
            return []

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return run_sync(self.aget_by_ids(ids))

    # -- search -----------------------------------------------------------------------------

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Nearest documents with their cosine distance (lower is closer).

        If ``query`` cannot be embedded, falls back to full-text search (score = ``1 -
        rank/(1+rank)``, also lower is better) and records degraded ``embeddings``.
        """
        cond, params = compile_filter(filter)  # bad filters fail before any provider call
        try:
            vector = await self._embeddings.aembed_query(query)
        except Exception as exc:
            log.warning(
                "embedding the query failed (%s); using full-text search", type(exc).__name__
            )
            record_degraded("embeddings")
            return await self._afts(query, k, cond, params)
        return await self._avector(vector, k, cond, params)

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        pairs = await self.asimilarity_search_with_score(query, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    async def asimilarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        cond, params = compile_filter(filter)
        return [doc for doc, _ in await self._avector(embedding, k, cond, params)]

    async def afull_text_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None
    ) -> list[tuple[Document, float]]:
        """Keyword search only (no embedding call), as used by the fallback."""
        cond, params = compile_filter(filter)
        return await self._afts(query, k, cond, params)

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return run_sync(self.asimilarity_search(query, k, filter, **kwargs))

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return run_sync(self.asimilarity_search_with_score(query, k, filter, **kwargs))

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return run_sync(self.asimilarity_search_by_vector(embedding, k, filter, **kwargs))

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self._cosine_relevance_score_fn

    async def _avector(
        self, vector: list[float], k: int, cond: sql.Composable, params: list[Any]
    ) -> list[tuple[Document, float]]:
        k = _check_k(k)
        if len(vector) != self.dimensions:
            raise ValueError(
                f"query vector has {len(vector)} dimensions, expected {self.dimensions}"
            )
        stmt = sql.SQL(
            "SELECT id, content, metadata, embedding <=> %s::vector AS distance FROM {t}"
            " WHERE {cond} ORDER BY distance LIMIT %s"
        ).format(t=self._table, cond=cond)
        args = [vector_literal(vector), *params, k]

        async def search(conn: AsyncConn) -> list[tuple[Document, float]]:
            # Filtered HNSW scans keep going until k rows pass the filter (pgvector >= 0.8).
            await conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            await conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true)", (str(max(self.ef_search, k)),)
            )
            cur = await conn.execute(stmt, args)
            rows = await cur.fetchall()
            return [
                (Document(id=r[0], page_content=r[1], metadata=r[2]), float(r[3])) for r in rows
            ]

        try:
            return await on_reader(self.db, search)
        except UndefinedTable:
            return []

    async def _afts(
        self, query: str, k: int, cond: sql.Composable, params: list[Any]
    ) -> list[tuple[Document, float]]:
        k = _check_k(k)
        # Documents matching every term rank first; then any term (an OR of the same lexemes),
        # so a long natural-language question still finds the passages sharing its keywords.
        stmt = sql.SQL(
            "WITH q AS (SELECT websearch_to_tsquery({c}::regconfig, %s) AS strict)"
            " , q2 AS (SELECT strict, CASE WHEN strict::text = '' THEN strict"
            "   ELSE replace(strict::text, ' & ', ' | ')::tsquery END AS loose FROM q)"
            " SELECT id, content, metadata, ts_rank_cd(tsv, q2.loose) AS rank"
            " FROM {t}, q2 WHERE tsv @@ q2.loose AND {cond}"
            " ORDER BY (tsv @@ q2.strict) DESC, rank DESC, id LIMIT %s"
        ).format(t=self._table, c=sql.Literal(self.fts_config), cond=cond)
        args = [query, *params, k]

        async def search(conn: AsyncConn) -> list[tuple[Document, float]]:
            cur = await conn.execute(stmt, args)
            rows = await cur.fetchall()
            return [
                (Document(id=r[0], page_content=r[1], metadata=r[2]), 1.0 - r[3] / (1.0 + r[3]))
                for r in rows
            ]

        try:
            return await on_reader(self.db, search)
        except UndefinedTable:
            return []

    # -- construction -----------------------------------------------------------------------

    @classmethod
    async def afrom_texts(  # type: ignore[override]
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        db: ConnectionSource,
        dimensions: int,
        collection: str = "default",
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> PgVectorStore:
        store = cls(db, embedding, dimensions=dimensions, collection=collection, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_texts(  # type: ignore[override]
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        db: ConnectionSource,
        dimensions: int,
        collection: str = "default",
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> PgVectorStore:
        return run_sync(
            cls.afrom_texts(
                texts,
                embedding,
                metadatas,
                db=db,
                dimensions=dimensions,
                collection=collection,
                ids=ids,
                **kwargs,
            )
        )


def _check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer 1..{MAX_K}, got {k!r}")
    return k
