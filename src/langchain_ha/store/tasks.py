"""A durable task queue in PostgreSQL (``FOR UPDATE SKIP LOCKED``), delivered at least once.

- :meth:`TaskQueue.enqueue` inserts a task; the same ``idempotency_key`` returns the same task.
- :class:`Worker` claims ready tasks with a lease (visibility timeout) and extends it by
  heartbeat while the handler runs.  Success → ``done``; failure → ``queued`` again after an
  exponential backoff, until ``max_attempts``, then ``dead`` with the last error kept.
- A task whose lease expired (its worker was SIGKILLed, or lost the database) is claimed
  again: at-least-once.  Each claim gets a fresh ``lease_token``; a worker that lost its lease
  can no longer complete or fail the task.
- Effects happen once with :meth:`TaskContext.once`: the effect's database writes and an
  ``lcha_task_effects`` row keyed by the effect key commit in one transaction, so a re-run
  skips an effect that already committed.  For effects outside the database, pass the
  effect key as the remote service's idempotency key (the idempotent-upsert pattern).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

from langchain_ha._context import current_request_key
from langchain_ha.store._db import UNAVAILABLE, AsyncConn, ConnectionSource, on_writer
from langchain_ha.store.schema import ensure_schema

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[dict[str, Any], "TaskContext"], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Task:
    """A claimed task as a handler's context sees it."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_token: str


@dataclass(frozen=True)
class TaskInfo:
    """A task's stored state (for status pages and tests)."""

    id: int
    kind: str
    status: str
    attempts: int
    max_attempts: int
    last_error: str | None
    idempotency_key: str | None


class TaskContext:
    """What a handler gets besides its payload: the task and effect-once helpers."""

    def __init__(self, db: ConnectionSource, task: Task) -> None:
        self.db = db
        self.task = task

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self.task.attempt

    async def once(self, effect_key: str, effect: Callable[[AsyncConn], Awaitable[T]]) -> bool:
        """Run ``effect(conn)`` unless ``effect_key`` already happened; True if it ran now.

        The effect's writes on ``conn`` and the effect record commit together on the
        primary, so an effect is never done twice and never recorded without happening.
        """

        async def run(conn: AsyncConn) -> bool:
            cur = await conn.execute(
                "INSERT INTO lcha_task_effects (effect_key, task_id) VALUES (%s, %s)"
                " ON CONFLICT (effect_key) DO NOTHING RETURNING 1",
                (effect_key, self.task.id),
            )
            if await cur.fetchone() is None:
                return False
            await effect(conn)
            return True

        return await on_writer(self.db, run)


def _default_key(kind: str, payload: Mapping[str, Any]) -> str | None:
    req = current_request_key()
    if req is None:
        return None
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"req:{req}:{kind}:{digest[:16]}"


class TaskQueue:
    """Enqueue and inspect tasks."""

    def __init__(self, db: ConnectionSource) -> None:
        self.db = db

    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        max_attempts: int = 5,
        run_after: datetime | None = None,
    ) -> int:
        """Insert a task and return its id; an existing ``idempotency_key`` returns that task.

        Inside a served request without an explicit key, the request key plus kind and
        payload form the key, so a retried request does not enqueue twice.
        """
        if not kind or not isinstance(kind, str):
            raise ValueError("task kind must be a non-empty string")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        key = idempotency_key or _default_key(kind, payload)
        await ensure_schema(self.db)

        async def insert(conn: AsyncConn) -> int:
            cur = await conn.execute(
                "INSERT INTO lcha_tasks (kind, payload, idempotency_key, max_attempts, run_after)"
                " VALUES (%s, %s, %s, %s, COALESCE(%s, now()))"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (kind, Jsonb(dict(payload)), key, max_attempts, run_after),
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "SELECT id FROM lcha_tasks WHERE idempotency_key = %s", (key,)
                )
                row = await cur.fetchone()
                assert row is not None  # the conflicting row is committed and never deleted
            return int(row[0])

        return await on_writer(self.db, insert)

    async def get(self, task_id: int) -> TaskInfo | None:
        """The stored state of a task."""

        async def read(conn: AsyncConn) -> TaskInfo | None:
            cur = await conn.execute(
                "SELECT id, kind, status, attempts, max_attempts, last_error, idempotency_key"
                " FROM lcha_tasks WHERE id = %s",
                (task_id,),
            )
            row = await cur.fetchone()
            return TaskInfo(*row) if row else None

        return await on_writer(self.db, read)

    async def counts(self) -> dict[str, int]:
        """Number of tasks per status."""

        async def read(conn: AsyncConn) -> dict[str, int]:
            cur = await conn.execute("SELECT status, count(*) FROM lcha_tasks GROUP BY status")
            return {r[0]: int(r[1]) for r in await cur.fetchall()}

        return await on_writer(self.db, read)


class Worker:
    """Runs handlers for claimed tasks, ``concurrency`` at a time, until :meth:`stop`."""

    def __init__(
        self,
        db: ConnectionSource,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        lease_s: float = 10.0,
        heartbeat_s: float = 2.0,
        poll_s: float = 0.2,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 300.0,
        name: str | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not 0 < heartbeat_s < lease_s:
            raise ValueError("heartbeat_s must be positive and shorter than lease_s")
        self.db = db
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.completed = 0
        self.failed = 0

    def stop(self) -> None:
        """Claim nothing more; :meth:`run` returns once the current tasks finish."""
        self._stopping.set()

    async def run(self) -> None:
        """Claim and run tasks until :meth:`stop`; then wait for the running ones."""
        await ensure_schema(self.db)
        try:
            while not self._stopping.is_set():
                task = None
                if len(self._running) < self.concurrency:
                    try:
                        task = await self._claim()
                    except UNAVAILABLE as exc:
                        log.warning("worker %s: database unavailable (%s)", self.name, exc)
                if task is not None:
                    job = asyncio.create_task(self._execute(task))
                    self._running.add(job)
                    job.add_done_callback(self._running.discard)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.poll_s)
        finally:
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def run_until_idle(self) -> None:
        """Run until no task of this worker's kinds is queued or running (tests, one-shot jobs).

        Tasks waiting for a retry backoff count as queued: this returns once they are done or
        dead.
        """
        self._stopping.clear()
        runner = asyncio.create_task(self.run())
        try:
            while True:
                await asyncio.sleep(self.poll_s)
                if not self._running and not await self._ready_exists():
                    break
        finally:
            self.stop()
            await runner

    async def _ready_exists(self) -> bool:
        async def read(conn: AsyncConn) -> bool:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM lcha_tasks WHERE kind = ANY(%s) AND"
                " status IN ('queued', 'running'))",
                (list(self.handlers),),
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        return await on_writer(self.db, read)

    async def _claim(self) -> Task | None:
        async def claim(conn: AsyncConn) -> Task | None:
            # Leases that expired on their last attempt go to the dead letter state.
            await conn.execute(
                "UPDATE lcha_tasks SET status = 'dead', lease_token = NULL, updated_at = now(),"
                " finished_at = now(), last_error = COALESCE(last_error || '; ', '')"
                " || 'lease expired on the last attempt'"
                " WHERE status = 'running' AND lease_until < now() AND attempts >= max_attempts"
            )
            cur = await conn.execute(
                "WITH next AS (SELECT id FROM lcha_tasks WHERE kind = ANY(%s) AND"
                " ((status = 'queued' AND run_after <= now())"
                "  OR (status = 'running' AND lease_until < now()))"
                " ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " UPDATE lcha_tasks t SET status = 'running', attempts = t.attempts + 1,"
                " lease_until = now() + make_interval(secs => %s), lease_token = %s,"
                " worker = %s, updated_at = now() FROM next WHERE t.id = next.id"
                " RETURNING t.id, t.kind, t.payload, t.attempts, t.max_attempts, t.lease_token",
                (list(self.handlers), self.lease_s, uuid.uuid4(), self.name),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return Task(row[0], row[1], row[2], row[3], row[4], str(row[5]))

        return await on_writer(self.db, claim)

    async def _execute(self, task: Task) -> None:
        ctx = TaskContext(self.db, task)
        handler = self.handlers[task.kind]
        work = asyncio.create_task(handler(task.payload, ctx))
        beat = asyncio.create_task(self._heartbeat(task, work))
        error: BaseException | None = None
        try:
            await work
        except asyncio.CancelledError:
            if self._lease_lost(beat):
                log.warning("task %s: lease lost, abandoned to another worker", task.id)
                return
            raise
        except Exception as exc:
            error = exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await self._finish(task, error)

    @staticmethod
    def _lease_lost(beat: asyncio.Task[None]) -> bool:
        return beat.done() and not beat.cancelled() and beat.exception() is None

    async def _heartbeat(self, task: Task, work: asyncio.Task[Any]) -> None:
        """Extend the lease every ``heartbeat_s``; cancel the handler if the lease was lost."""
        while True:
            await asyncio.sleep(self.heartbeat_s)

            async def extend(conn: AsyncConn) -> int:
                cur = await conn.execute(
                    "UPDATE lcha_tasks SET lease_until = now() + make_interval(secs => %s)"
                    " WHERE id = %s AND lease_token = %s AND status = 'running'",
                    (self.lease_s, task.id, task.lease_token),
                )
                return cur.rowcount

            try:
                if await on_writer(self.db, extend) == 0:
                    work.cancel()
                    return
            except UNAVAILABLE as exc:
                log.warning("task %s: heartbeat failed (%s)", task.id, type(exc).__name__)

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_base_s * float(2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)

    async def _finish(self, task: Task, error: BaseException | None) -> None:
        if error is None:
            stmt = (
                "UPDATE lcha_tasks SET status = 'done', lease_until = NULL, lease_token = NULL,"
                " updated_at = now(), finished_at = now() WHERE id = %s AND lease_token = %s"
            )
            args: tuple[Any, ...] = (task.id, task.lease_token)
        else:
            message = f"{type(error).__name__}: {error}"[:2000]
            dead = task.attempt >= task.max_attempts
            stmt = (
                "UPDATE lcha_tasks SET status = %s, last_error = %s, lease_until = NULL,"
                " lease_token = NULL, updated_at = now(),"
                " run_after = now() + make_interval(secs => %s),"
                " finished_at = CASE WHEN %s THEN now() END"
                " WHERE id = %s AND lease_token = %s"
            )
            args = (
                "dead" if dead else "queued",
                message,
                self._backoff(task.attempt),
                dead,
                task.id,
                task.lease_token,
            )
            log.warning(
                "task %s (%s) attempt %s/%s failed: %s%s",
                task.id,
                task.kind,
                task.attempt,
                task.max_attempts,
                message,
                " -> dead" if dead else "",
            )

        async def update(conn: AsyncConn) -> None:
            await conn.execute(stmt, args)

        # Keep trying while the primary fails over; if we give up, the lease expires and the
        # task is delivered again (at-least-once), which the effect keys make harmless.
        for delay in (0.2, 0.5, 1.0, 2.0, 4.0):
            try:
                await on_writer(self.db, update)
                break
            except UNAVAILABLE:
                await asyncio.sleep(delay)
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
