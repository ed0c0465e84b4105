"""LangGraph threads in the HA cluster: every acknowledged checkpoint survives a switchover and
the loss of the primary, and the run itself carries on through both.

A graph loops one node, one superstep (= one checkpoint) every ~50 ms, with ``durability=
"sync"`` so each step waits for its checkpoint.  A checkpoint counts as acknowledged when the
saver's ``aput`` returned.  Meanwhile the cluster switches over, then loses its new primary
(guardian, Patroni and postgres SIGKILLed).  Afterwards a fresh saver must list every
acknowledged checkpoint of the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from langchain_ha.cluster.postgres import PostgresCluster
from langchain_ha.store.checkpoints import DurableCheckpointer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


class Counter(TypedDict):
    n: int


class AckedCheckpointer(DurableCheckpointer):
    """Records the id of each checkpoint once its ``aput`` returned (= acknowledged)."""

    acked: list[str]
    acked_at: list[float]

    async def aput(self, config: Any, checkpoint: Any, metadata: Any,
                   new_versions: Any) -> Any:
        out = await super().aput(config, checkpoint, metadata, new_versions)
        self.acked.append(checkpoint["id"])
        self.acked_at.append(time.monotonic())
        return out


async def _wait_leader_change(cluster: PostgresCluster, old: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        leader = await asyncio.to_thread(cluster.leader)
        if leader is not None and leader["name"] != old and leader.get("state") == "running":
            return str(leader["name"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"no new leader {timeout}s after losing {old}")


async def test_a_thread_keeps_every_acked_checkpoint_through_switchover_and_primary_loss(
        healthy_cluster: PostgresCluster) -> None:
    cluster = healthy_cluster
    stop = asyncio.Event()

    async def step(state: Counter) -> Counter:
        await asyncio.sleep(0.05)
        return {"n": state["n"] + 1}

    graph = StateGraph(Counter)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: END if stop.is_set() else "step")

    saver = await AckedCheckpointer.connect(cluster.app_writer_conninfo, deadline_s=60)
    saver.acked, saver.acked_at = [], []
    thread = {"configurable": {"thread_id": f"ha-thread-{time.time_ns()}"},
              "recursion_limit": 100_000}
    try:
        app = graph.compile(checkpointer=saver)
        run = asyncio.create_task(app.ainvoke({"n": 0}, thread, durability="sync"))
        while len(saver.acked) < 20:
            assert not run.done(), run
            await asyncio.sleep(0.1)

        first = await asyncio.to_thread(cluster.leader)
        assert first is not None
        await asyncio.to_thread(cluster.switchover)
        second = await _wait_leader_change(cluster, first["name"], 30)
        after_switchover = len(saver.acked)
        # Synchronous mode fails over only to the sync standby: wait until the old leader
        # has rejoined and one is named, as an operator would before the next fault.
        await asyncio.to_thread(cluster.wait_healthy, 90)
        assert len(saver.acked) > after_switchover, "no checkpoint after the switchover"

        lost_zone = cluster.zone_of(second)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_member, lost_zone)
        await _wait_leader_change(cluster, second, 45)
        began = len(saver.acked)
        while len(saver.acked) < began + 20:
            assert not run.done(), run
            await asyncio.sleep(0.1)
        stop.set()
        final = await asyncio.wait_for(run, 60)
    finally:
        stop.set()
        await saver.close()

    gap = max(b - a for a, b in zip(saver.acked_at, saver.acked_at[1:], strict=False)
              if a >= killed_at - 5)
    async with fresh_saver(cluster) as fresh:
        stored = {t.checkpoint["id"] async for t in fresh.alist(thread)}
    lost = [c for c in saver.acked if c not in stored]
    print(f"\ncheckpoints: {len(saver.acked)} acknowledged, {len(lost)} lost, "
          f"{saver.retries} calls retried, longest gap after the primary loss {gap:.1f}s, "
          f"final n={final['n']}")
    assert lost == []
    assert final["n"] >= len(saver.acked) - 2  # every step ran and was checkpointed
    assert saver.retries > 0  # the faults did reach the saver

    await asyncio.to_thread(cluster.start_member, lost_zone)
    await asyncio.to_thread(cluster.wait_healthy, 120)


@contextlib.asynccontextmanager
async def fresh_saver(cluster: PostgresCluster) -> AsyncIterator[DurableCheckpointer]:
    """A second saver (another replica's view) on the cluster."""
    saver = await DurableCheckpointer.connect(cluster.app_writer_conninfo)
    try:
        yield saver
    finally:
        await saver.close()


async def test_threads_checkpoint_side_by_side(store_conninfo: str) -> None:
    """Each call has its own pooled connection, so one thread's checkpoint write never waits
    for another's: with the upstream saver's one lock per saver, a call made while another
    held it waited (a replica wrote one checkpoint at a time for all its threads)."""
    saver = await DurableCheckpointer.connect(store_conninfo)
    try:
        graph = StateGraph(Counter)
        graph.add_node("step", lambda state: {"n": state["n"] + 1})
        graph.add_edge(START, "step")
        graph.add_edge("step", END)
        app = graph.compile(checkpointer=saver)
        run = time.time_ns()
        async with saver.lock:  # held, as a call in progress holds it upstream
            done = await asyncio.wait_for(asyncio.gather(*(
                app.ainvoke({"n": i}, {"configurable": {"thread_id": f"side-{run}-{i}"}})
                for i in range(8))), timeout=20)
        assert [d["n"] for d in done] == [i + 1 for i in range(8)]
    finally:
        await saver.close()
