"""Task handlers loaded by ``lcha worker --handlers`` in the store task tests.

``slow_effect`` records each run in ``store_test_starts`` (its own transaction, so the test
sees it at once), sleeps on the first attempt either before or after its effect, and makes its
effect with ``ctx.once`` so a re-delivered task never repeats it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langchain_ha.store._db import AsyncConn, on_writer
from langchain_ha.store.tasks import TaskContext

KIND = os.environ.get("STORE_TEST_KIND", "store_test_effect")


async def slow_effect(payload: dict[str, Any], ctx: TaskContext) -> None:
    task_id = ctx.task.id

    async def started(conn: AsyncConn) -> None:
        await conn.execute(
            "INSERT INTO store_test_starts (task_id, attempt) VALUES (%s, %s)",
            (task_id, ctx.attempt),
        )

    await on_writer(ctx.db, started)
    first = ctx.attempt == 1
    if payload["mode"] == "before" and first:
        await asyncio.sleep(payload["sleep_s"])

    async def effect(conn: AsyncConn) -> None:
        await conn.execute("INSERT INTO store_test_effects (task_id) VALUES (%s)", (task_id,))

    await ctx.once(f"effect:{task_id}", effect)
    if payload["mode"] == "after" and first:
        await asyncio.sleep(payload["sleep_s"])


HANDLERS = {KIND: slow_effect}
