"""LangGraph checkpoints in the HA cluster: a thread survives a replica crash and a failover.

:class:`DurableCheckpointer` is ``langgraph-checkpoint-postgres``'s ``AsyncPostgresSaver``
(its schema, migrations and serialisation, unchanged) on a pool of its own over the cluster's
writer conninfo, with two additions the upstream saver lacks for an HA database:

- the pool's checkout check refuses a connection to a demoted primary (``pg_is_in_recovery``),
  and libpq's multi-host ``target_session_attrs=read-write`` finds the new one;
- every call is retried on connection-level errors (the primary lost, a switchover, the pool
  empty meanwhile) until ``deadline_s``.  That is safe because each of the saver's writes is
  an upsert keyed by (thread, namespace, checkpoint id[, task, index]): a commit whose
  acknowledgement was lost and is sent again writes the same row.

With the cluster's synchronous replication a checkpoint whose ``aput`` returned is on two
members, so it survives the loss of the primary (``tests/integration/test_checkpoints.py``).

The upstream saver also takes one lock around every call (so that a single connection is never
used by two coroutines); with a pool each call has a connection of its own, so here the lock
is a no-op: with it, a replica wrote one checkpoint at a time for all its threads, and an agent
replica's capacity was bounded by that queue rather than by its CPU, where admission control
can see it.

Why not our own saver: the upstream one is LangGraph's reference for PostgreSQL, kept in step
with LangGraph's checkpoint format; what an HA cluster needs is around the calls, not in them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import psycopg
import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg.rows import DictRow, dict_row
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from langchain_ha.store.connect import DBSettings, check_writable, writer_conninfo

T = TypeVar("T")

_SAVER = AsyncPostgresSaver  # the upstream calls, wrapped below

TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection lost or refused, admin shutdown, recovery conflict
    psycopg_pool.PoolTimeout,  # no connection could be made meanwhile
    psycopg.errors.ReadOnlySqlTransaction,  # a connection to the primary that was demoted
)
"""Errors after which a checkpoint call is sent again (to whichever member is primary)."""


class _PerConnection(asyncio.Lock):
    """The upstream saver's lock, for a saver on a pool: it never waits (a pooled connection
    is used by one call at a time already)."""

    async def acquire(self) -> Literal[True]:
        return True

    def release(self) -> None:
        return None


class DurableCheckpointer(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` on the HA cluster's primary, riding out a failover.

    Use :meth:`connect` (it opens the pool and creates the tables), or
    :meth:`langchain_ha.store.stores.DeploymentStores.checkpointer`.

    Args:
        pool: an ``AsyncConnectionPool`` of autocommit, ``dict_row`` connections to the primary.
        deadline_s: how long one call keeps trying across a failover before it raises
            (Patroni's node-loss failover takes about 20 s).
        serde: LangGraph's serializer (default: the saver's).
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[DictRow]],
                 *, deadline_s: float = 45.0, serde: SerializerProtocol | None = None) -> None:
        super().__init__(pool, serde=serde)
        self.lock = _PerConnection()  # each call has its own pooled connection
        self.pool = pool
        self.deadline_s = deadline_s
        self.retries = 0
        """Calls sent again after a transient error (a failover shows here)."""

    @classmethod
    async def connect(cls, writer: str, *, deadline_s: float = 45.0, max_size: int = 4,
                      connect_timeout_s: float = 2.0, serde: SerializerProtocol | None = None,
                      ) -> DurableCheckpointer:
        """Open a checkpointer on the cluster whose writer conninfo is ``writer`` (the
        multi-host ``LCHA_DB_WRITER``) and create or migrate its tables."""
        settings = DBSettings.from_conninfo(writer, connect_timeout_s=connect_timeout_s,
                                            statement_timeout_ms=10_000)
        pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = \
            psycopg_pool.AsyncConnectionPool(
                writer_conninfo(settings), min_size=1, max_size=max_size, open=False,
                timeout=connect_timeout_s * 2, name="lcha-checkpoints", reconnect_timeout=0,
                check=check_writable,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await pool.open(wait=False)
        saver = cls(pool, deadline_s=deadline_s, serde=serde)
        try:
            await saver.setup()
        except BaseException:
            await pool.close()
            raise
        return saver

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    async def _again(self, call: Callable[[], Awaitable[T]]) -> T:
        attempts = AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT), stop=stop_after_delay(self.deadline_s),
            wait=wait_exponential_jitter(initial=0.05, max=1.0), reraise=True)
        async for attempt in attempts:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                return await call()
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def setup(self) -> None:
        """Create or migrate the checkpoint tables (retried across a failover)."""
        await self._again(super().setup)

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions,
                   ) -> RunnableConfig:
        """Save a checkpoint; returns once it is committed (on two members, with the
        cluster's synchronous replication)."""
        return await self._again(
            lambda: _SAVER.aput(self, config, checkpoint, metadata, new_versions))

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        """Save a task's writes (so a resumed run does not run that task again)."""
        await self._again(lambda: _SAVER.aput_writes(self, config, writes, task_id, task_path))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The thread's checkpoint (the newest, or the one ``config`` names)."""
        return await self._again(lambda: _SAVER.aget_tuple(self, config))

    async def alist(self, config: RunnableConfig | None, *,
                    filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None,
                    ) -> AsyncIterator[CheckpointTuple]:
        """The thread's checkpoints, newest first (read whole, then yielded, so a failover
        mid-listing is retried rather than cut short)."""

        async def read() -> list[CheckpointTuple]:
            return [t async for t in _SAVER.alist(self, config, filter=filter, before=before,
                                                  limit=limit)]

        for item in await self._again(read):
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes."""
        await self._again(lambda: _SAVER.adelete_thread(self, thread_id))
