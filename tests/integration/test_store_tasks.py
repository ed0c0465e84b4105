"""The durable task queue: idempotent enqueue, retries, dead letters, SIGKILLed workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from langchain_ha._context import request_key_scope
from langchain_ha._proc import Child, python_argv
from langchain_ha.store.tasks import TaskContext, TaskQueue, Worker

REPO = Path(__file__).resolve().parents[2]


def _kind() -> str:
    return f"k_{uuid.uuid4().hex[:12]}"


async def test_enqueue_is_idempotent(store_db: Any) -> None:
    queue = TaskQueue(store_db)
    kind = _kind()
    first = await queue.enqueue(kind, {"n": 1}, idempotency_key=f"{kind}-a")
    again = await asyncio.gather(
        *(queue.enqueue(kind, {"n": 1}, idempotency_key=f"{kind}-a") for _ in range(5))
    )
    assert set(again) == {first}
    other = await queue.enqueue(kind, {"n": 1}, idempotency_key=f"{kind}-b")
    assert other != first
    # Inside a served request the request key makes a retried request enqueue once.
    with request_key_scope(f"req-{kind}"):
        r1 = await queue.enqueue(kind, {"n": 2})
        r2 = await queue.enqueue(kind, {"n": 2})
        r3 = await queue.enqueue(kind, {"n": 3})
    assert r1 == r2 != r3
    assert len({first, other, r1, r3}) == 4
    # Without any key, every call is a new task.
    assert await queue.enqueue(kind, {}) != await queue.enqueue(kind, {})
    with pytest.raises(ValueError, match="max_attempts"):
        await queue.enqueue(kind, {}, max_attempts=0)


async def test_retry_with_backoff_then_success_or_dead_letter(store_db: Any) -> None:
    queue = TaskQueue(store_db)
    kind_flaky, kind_broken = _kind(), _kind()
    runs: dict[int, list[float]] = {}

    async def flaky(payload: dict[str, Any], ctx: TaskContext) -> None:
        runs.setdefault(ctx.task.id, []).append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError(f"transient failure {ctx.attempt}")

    async def broken(payload: dict[str, Any], ctx: TaskContext) -> None:
        runs.setdefault(ctx.task.id, []).append(time.monotonic())
        raise ValueError("bad payload")

    ok_id = await queue.enqueue(kind_flaky, {}, max_attempts=5)
    dead_id = await queue.enqueue(kind_broken, {}, max_attempts=3)
    worker = Worker(
        store_db,
        {kind_flaky: flaky, kind_broken: broken},
        concurrency=2,
        lease_s=5,
        heartbeat_s=1,
        poll_s=0.02,
        backoff_base_s=0.1,
    )
    await asyncio.wait_for(worker.run_until_idle(), 20)

    ok = await queue.get(ok_id)
    assert ok is not None and ok.status == "done" and ok.attempts == 3
    dead = await queue.get(dead_id)
    assert dead is not None and dead.status == "dead" and dead.attempts == 3
    assert dead.last_error == "ValueError: bad payload"
    assert len(runs[dead_id]) == 3
    gaps = [b - a for a, b in zip(runs[ok_id], runs[ok_id][1:], strict=False)]
    # Backoff 0.1 * 2^(n-1) with 50-100 % jitter: at least 0.05 s then 0.1 s.
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1


async def _query(db: Any, stmt: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with db.writer() as conn:
        cur = await conn.execute(stmt, args)
        return list(await cur.fetchall())


async def _until(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _worker(conninfo: str, kind: str, log: Path) -> Child:
    argv = python_argv(
        "-m",
        "langchain_ha.cli",
        "worker",
        "--db",
        conninfo,
        "--handlers",
        "tests.integration.store_task_handlers:HANDLERS",
        "--concurrency",
        "2",
        "--lease-s",
        "2",
        "--heartbeat-s",
        "0.5",
        "--poll-s",
        "0.1",
    )
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "STORE_TEST_KIND": kind}
    return Child(argv, name="lcha-worker", env=env, cwd=REPO, log_path=log)


async def test_sigkilled_worker_task_completes_once_in_effect(
    store_db: Any, store_conninfo: str, tmp_path: Path
) -> None:
    for ddl in (
        "CREATE TABLE IF NOT EXISTS store_test_effects (task_id bigint)",
        "CREATE TABLE IF NOT EXISTS store_test_starts (task_id bigint, attempt int)",
    ):
        await _query_exec(store_db, ddl)
    kind = _kind()
    queue = TaskQueue(store_db)
    # One task is killed before its effect, the other after its effect committed.
    before = await queue.enqueue(kind, {"mode": "before", "sleep_s": 30})
    after = await queue.enqueue(kind, {"mode": "after", "sleep_s": 30})

    async def effects(task_id: int) -> int:
        rows = await _query(
            store_db, "SELECT count(*) FROM store_test_effects WHERE task_id = %s", (task_id,)
        )
        return int(rows[0][0])

    async def started(task_id: int, attempt: int) -> bool:
        rows = await _query(
            store_db,
            "SELECT 1 FROM store_test_starts WHERE task_id = %s AND attempt = %s",
            (task_id, attempt),
        )
        return bool(rows)

    first = _worker(store_conninfo, kind, tmp_path / "worker1.log")
    second: Child | None = None
    try:

        async def both_mid_task() -> bool:
            return (
                await started(before, 1) and await started(after, 1) and await effects(after) == 1
            )

        await _until("both tasks in progress in worker 1", both_mid_task)
        first.signal(signal.SIGKILL)
        first.proc.wait(5)
        assert await effects(before) == 0
        assert (await queue.get(before)).status == "running"  # type: ignore[union-attr]

        second = _worker(store_conninfo, kind, tmp_path / "worker2.log")

        async def both_done() -> bool:
            infos = [await queue.get(before), await queue.get(after)]
            return all(i is not None and i.status == "done" for i in infos)

        await _until("the tasks re-delivered and done", both_done)
        assert await effects(before) == 1
        assert await effects(after) == 1  # the re-run skipped the committed effect
        for task_id in (before, after):
            info = await queue.get(task_id)
            assert info is not None and info.attempts == 2

        # SIGTERM: the worker finishes the task in hand, then exits 0.
        short = await queue.enqueue(kind, {"mode": "before", "sleep_s": 1.5})

        async def short_started() -> bool:
            return await started(short, 1)

        await _until("the third task to start", short_started)
        assert second.stop(timeout=15) == 0
        info = await queue.get(short)
        assert info is not None and info.status == "done"
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def _query_exec(db: Any, stmt: str) -> None:
    async with db.writer() as conn, conn.transaction():
        await conn.execute(stmt)


async def test_worker_that_lost_its_lease_abandons_the_task(store_db: Any) -> None:
    queue = TaskQueue(store_db)
    kind = _kind()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(payload: dict[str, Any], ctx: TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task_id = await queue.enqueue(kind, {})
    worker = Worker(store_db, {kind: slow}, lease_s=1, heartbeat_s=0.2, poll_s=0.05)
    runner = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        # Another worker took the task over (as after a lease expiry): new token.
        await _query_exec(
            store_db,
            f"UPDATE lcha_tasks SET lease_token = gen_random_uuid() WHERE id = {task_id}",
        )
        await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)
    info = await queue.get(task_id)
    assert info is not None and info.status == "running"  # left to its new owner
    assert worker.completed == 0 and worker.failed == 0
