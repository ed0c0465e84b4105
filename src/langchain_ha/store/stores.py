"""The deployment's stores for any app: one call from the environment ``lcha up`` and the
Kubernetes manifests set (``LCHA_DB_WRITER``, ``LCHA_DB_READER``, ``PGPASSWORD``).

::

    from langchain_ha.store.stores import stores_from_env

    stores = stores_from_env()
    await stores.open()
    vectors = stores.vector_store(embeddings, dimensions=256, collection="docs")
    history = stores.history("session-1")          # PgChatMessageHistory
    checkpointer = await stores.checkpointer()     # LangGraph threads that survive failover
    model = router_from_env(cache=stores.cache)    # the LLM cache in the cluster

Everything shares one :class:`~langchain_ha.store.connect.Database`: a writer pool that follows
the primary (libpq multi-host, ``target_session_attrs=read-write``) and a reader pool on the
standbys.  Waits are short by default, so a lost member costs a breaker check, not a deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from langchain_core.embeddings import Embeddings

from langchain_ha.deployment import AppEnvironment, DeploymentConfigError
from langchain_ha.store.breakers import PgBreakerStore
from langchain_ha.store.cache import CacheEvents, PgCache
from langchain_ha.store.checkpoints import DurableCheckpointer
from langchain_ha.store.connect import Database
from langchain_ha.store.history import PgChatMessageHistory
from langchain_ha.store.vectors import PgVectorStore


class DeploymentStores:
    """The HA cluster's stores for one app: database, LLM cache, breakers, vectors, history.

    Args:
        writer: libpq conninfo of the writer side (the cluster's members, read-write).
        reader: conninfo of the reader side (default: the writer's).
        namespace: prefixes the shared breakers' rows, so apps sharing a cluster keep apart.
        cache_ttl_s: how long a cached answer is fresh (a stale one still serves on error).
        cache_events: where the LLM cache counts its hits and misses (e.g.
            :class:`~langchain_ha.resilience.prometheus.PrometheusEvents`).
        connect_timeout_s, pool_timeout_s: how long a connection may take to open or to wait
            for a free one.
    """

    def __init__(self, writer: str, reader: str | None = None, *, namespace: str = "",
                 cache_ttl_s: float | None = 3600.0, cache_events: CacheEvents | None = None,
                 connect_timeout_s: float = 1.0, pool_timeout_s: float = 1.0) -> None:
        self._writer = writer
        self._checkpointer: DurableCheckpointer | None = None
        self.db = Database.from_conninfo(writer, reader, connect_timeout_s=connect_timeout_s,
                                         pool_timeout_s=pool_timeout_s)
        self.cache = PgCache(self.db, ttl_s=cache_ttl_s, events=cache_events)
        self.breakers = PgBreakerStore(self.db, namespace=namespace)

    async def open(self) -> None:
        """Open the pools (on the loop that will use them)."""
        await self.db.open()

    async def close(self) -> None:
        """Close the pools (the checkpointer's too, if one was opened)."""
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        await self.db.close()

    async def __aenter__(self) -> DeploymentStores:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def vector_store(self, embeddings: Embeddings, *, dimensions: int,
                     collection: str = "default") -> PgVectorStore:
        """A pgvector collection (created on first use) searched on the standbys."""
        return PgVectorStore(self.db, embeddings, dimensions=dimensions, collection=collection)

    def history(self, session_id: str) -> PgChatMessageHistory:
        """The chat history of ``session_id`` (a ``get_session_history`` for
        ``RunnableWithMessageHistory``)."""
        return PgChatMessageHistory(self.db, session_id)

    async def checkpointer(self, *, deadline_s: float = 45.0) -> DurableCheckpointer:
        """LangGraph's PostgreSQL saver on the cluster's primary, retried across a failover
        (opened, with its tables, on first call; closed with the stores)::

            agent = create_agent(model, tools, checkpointer=await stores.checkpointer())
        """
        if self._checkpointer is None:
            self._checkpointer = await DurableCheckpointer.connect(self._writer,
                                                                   deadline_s=deadline_s)
        return self._checkpointer


def stores_from_env(env: Mapping[str, str] | None = None, *, namespace: str = "",
                    cache_ttl_s: float | None = 3600.0,
                    cache_events: CacheEvents | None = None) -> DeploymentStores:
    """The deployment's stores, from ``LCHA_DB_WRITER`` / ``LCHA_DB_READER`` (not yet open).

    Raises:
        DeploymentConfigError: the deployment has no database (``LCHA_DB_WRITER`` unset);
            ``AppEnvironment.from_env().db_writer`` tells beforehand.
    """
    app = AppEnvironment.from_env(env)
    if not app.db_writer:
        raise DeploymentConfigError(
            "set LCHA_DB_WRITER (lcha up sets it when the topology's database is enabled)")
    return DeploymentStores(app.db_writer, app.db_reader, namespace=namespace,
                            cache_ttl_s=cache_ttl_s, cache_events=cache_events)
