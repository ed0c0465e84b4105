"""``lcha drill SCENARIO``: open-loop load through the balancer, a real fault, measured.

The drill finds the deployment through its state directory (or starts one with ``--up`` and
stops it afterwards), sends the request mix at a fixed rate, injects the scenario's fault at
its moment, clears it when the scenario says, waits for the deployment to recover, and then
checks the database: the longest write gap of a probe writer, and every write the clients
were told was saved (probe rows, chat-history turns) still being there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from langchain_ha._context import caller_scoped
from langchain_ha.cluster.balancers import live_view
from langchain_ha.cluster.dbcli import cluster_at
from langchain_ha.cluster.placement import Placement
from langchain_ha.cluster.state import StateDir, read_json
from langchain_ha.cluster.topology import Topology
from langchain_ha.drills.faults import Injector
from langchain_ha.drills.load import Outcome, run_load, summarize, timeline
from langchain_ha.drills.probe import (
    FenceProbe,
    WriteProbe,
    missing_checkpoint_turns,
    missing_history,
    tally,
    wait_writable,
)
from langchain_ha.drills.profiles import profile_for
from langchain_ha.drills.scenarios import Scenario, verdict
from langchain_ha.serve.idempotency import scoped_key
from langchain_ha.serve.settings import caller_id, hash_key

SETTLE_TIMEOUT_S = 180.0


async def run_scenario(sd: StateDir, scenario: Scenario, *, rps: float,
                       duration_s: float) -> dict[str, Any]:
    """Run one scenario against the deployment in ``sd``; its report (see the README)."""
    state = sd.state()
    topo = Topology.model_validate_json(sd.topology_file.read_text())
    db = state.database
    if scenario.needs_db and not db.enabled:
        raise ValueError(f"{scenario.name} needs the database (database.enabled: true)")
    await wait_settled(sd)
    run_id = f"{scenario.name}-{int(time.time())}"
    inj = Injector(sd)
    probe = WriteProbe(db.writer, run_id) if db.enabled and db.writer else None
    probe_task = asyncio.create_task(probe.run()) if probe else None
    fence = FenceProbe(db.writer, {str(m.name): (m.host or "127.0.0.1", int(m.port))
                                   for m in db.members if m.port},
                       run_id) if probe and db.writer else None
    fence_task = asyncio.create_task(fence.run()) if fence else None
    deadline_s = topo.replicas.request_timeout_s
    rate = rps * scenario.rps_factor
    if scenario.name == "overload":
        # Twice the measured capacity (lcha bench capacity), else twice the asked rate.
        measured = read_json(sd.root / "capacity.json").get("cluster", {}).get("capacity_rps")
        rate = 2 * float(measured) if measured else rate
    t0 = time.monotonic()
    api_key = sd.secrets()["api_key"]
    profile = profile_for(topo)
    load = asyncio.create_task(run_load(str(state.balancer.url), api_key,
                                        rps=rate, duration_s=duration_s, run_id=run_id,
                                        timeout_s=deadline_s + 10, t0=t0, profile=profile))
    faults: list[dict[str, Any]] = []
    watches: dict[str, asyncio.Task[float | None]] = {}
    rollout: dict[str, Any] | None = None
    try:
        if scenario.inject is not None:
            await asyncio.sleep(duration_s * scenario.at)
            generation = sd.state().generation
            done = await asyncio.to_thread(scenario.inject, inj)
            faults.append({"t": round(time.monotonic() - t0, 2), **done})
            if scenario.needs_lab and done.get("zone") and state.lab:
                host = Placement.from_record(state.lab).host(done["zone"])
                watches["balancer_out_s"] = asyncio.create_task(
                    balancer_out_s(sd, host, time.monotonic()))
            if scenario.inject == Injector.rollout:
                rollout = await watch_rollout(sd, generation, t0, t0 + duration_s)
        if scenario.clear_at is not None:
            await asyncio.sleep(max(0.0, t0 + duration_s * scenario.clear_at - time.monotonic()))
            await asyncio.to_thread(inj.undo)
            faults.append({"t": round(time.monotonic() - t0, 2), "action": "fault cleared",
                           "target": scenario.name})
            if scenario.needs_db and db.enabled:
                watches["rejoined_s"] = asyncio.create_task(rejoined_s(sd, time.monotonic()))
        outcomes = await load
    except BaseException:
        load.cancel()
        for watch in watches.values():
            watch.cancel()
        for p, task in ((probe, probe_task), (fence, fence_task)):
            if p is not None and task is not None:
                p.stop()
                await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        await asyncio.to_thread(inj.undo)
    load_end = time.monotonic() - t0
    if probe is not None and probe_task is not None:
        probe.stop()  # the write gap runs to here: the end of the load, before recovery waits
        await probe_task
    if fence is not None and fence_task is not None:
        fence.stop()
        await fence_task
    settle_began = time.monotonic()
    await wait_settled(sd)
    settled_s = round(time.monotonic() - settle_began, 2)
    watched = {k: await asyncio.wait_for(t, timeout=SETTLE_TIMEOUT_S) for k, t in watches.items()}
    recovery = recovery_s(outcomes, faults)
    window = fault_window(faults, recovery, duration_s)
    acked: dict[str, Any] | None = None
    if probe is not None and db.writer:
        await wait_writable(db.writer)
        turns = [(_stored_turn(api_key, o), o.end) for o in outcomes if o.acked_write]
        probe_rows = [(n, at - t0) for n, at in probe.acked]
        probe_tally = tally(probe_rows, await probe.missing(), window)
        check = {"history": missing_history, "checkpoints": missing_checkpoint_turns}.get(
            profile.memory)
        missing = await check(db.writer, [t for t, _ in turns]) if check else set()
        turn_tally = tally(turns if check else [], missing, window)
        acked = {k: probe_tally[k] + turn_tally[k] for k in probe_tally}
        acked |= {"probe_rows": probe_tally, "chat_turns": turn_tally,
                  "window_s": list(window) if window else None}
    fenced = await fence.report(t0) if fence is not None and db.writer else None
    report: dict[str, Any] = {
        "scenario": scenario.name, "summary": scenario.summary, "rps": rate,
        "app": topo.app, "profile": profile.describe(),
        "duration_s": duration_s, "load_s": round(load_end, 2), **summarize(outcomes),
        "recovery_s": recovery,
        "write_gap_s": probe.write_gap_s() if probe else None,
        "acked_writes": acked, "acked_writes_lost": acked["lost"] if acked else 0,
        "fence": fenced, "settled_after_load_s": settled_s, **watched,
        "balancer_detection_bound_s": detection_bound_s(topo),
        "faults": faults, "timeline": timeline(outcomes),
        "degraded_components": _components(outcomes),
    }
    if rollout is not None:
        report["rollout"] = rollout
    report |= verdict(scenario, report, deadline_s)
    return report


def detection_bound_s(topo: Topology) -> float:
    """How long the balancer's active checks may take to mark a silent server down: its
    failed checks in a row, each an interval plus a timeout, and one interval of phase."""
    c = topo.balancer.checks
    return round(c.unhealthy_threshold * (c.interval_s + c.timeout_s) + c.interval_s, 2)


async def balancer_out_s(sd: StateDir, host: str, since: float,
                         timeout: float = 60.0) -> float | None:
    """Seconds from ``since`` until the balancer holds none of ``host``'s servers up (its
    active checks found the cut zone), or None if it never did within ``timeout``."""
    while time.monotonic() - since < timeout:
        view = await asyncio.to_thread(live_view, sd.state().balancer) or []
        mine = [s for s in view if str(s.get("address") or "").startswith(f"{host}:")]
        if mine and not any(str(s.get("status") or "").startswith("UP") for s in mine):
            return round(time.monotonic() - since, 2)
        await asyncio.sleep(0.25)
    return None


async def rejoined_s(sd: StateDir, since: float, timeout: float = 120.0) -> float | None:
    """Seconds from ``since`` (a fault cleared) until every database member is in service
    again, one leader and the rest streaming (the old primary rejoined), else None."""
    cluster = cluster_at(sd.db_dir)
    zones = len(cluster.spec.zones)
    while time.monotonic() - since < timeout:
        try:
            members = await asyncio.to_thread(cluster.members)
        except httpx.HTTPError:
            members = []
        leaders = sum(m.get("role") == "leader" and m.get("state") == "running" for m in members)
        streaming = sum(m.get("role") != "leader" and m.get("state") == "streaming"
                        for m in members)
        if leaders == 1 and streaming == zones - 1:
            return round(time.monotonic() - since, 2)
        await asyncio.sleep(0.5)
    return None


def _stored_turn(api_key: str, outcome: Outcome) -> tuple[str, str]:
    """Where a replica keeps an acknowledged chat turn: (session id, request key), both
    scoped to the caller the API key names, as the replica scopes them."""
    caller = caller_id(hash_key(api_key))
    return (caller_scoped(str(outcome.session), caller),
            scoped_key(caller, "POST", outcome.path, outcome.key))


def recovery_s(outcomes: list[Any], faults: list[dict[str, Any]]) -> float | None:
    """Seconds from the fault until every later one-second window is >= 99 % ok."""
    if not faults:
        return None
    start = float(faults[0]["t"])
    rows = timeline(outcomes)
    good = [(r["ok"] / max(1, r["ok"] + r["degraded"] + r["failed"])) >= 0.99 for r in rows]
    first = int(start)
    for t in range(first, len(rows)):
        if all(good[t:]):
            return round(max(0.0, t - start), 1)
    return None


def _components(outcomes: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        for c in o.degraded:
            counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items()))


PRE_FAULT_S = 5.0
"""The fault window opens this long before the injection: writes the failed primary had
acknowledged just before it died are the ones a failover could lose."""


def fault_window(faults: list[dict[str, Any]], recovery: float | None,
                 end_s: float) -> tuple[float, float] | None:
    """Seconds (from the drill's start) during which the fault mattered: from
    :data:`PRE_FAULT_S` before the injection until the fault was cleared or, for a fault
    that is not cleared (a kill), until the deployment recovered (else the end of the load)."""
    if not faults:
        return None
    start = float(faults[0]["t"])
    cleared = [float(f["t"]) for f in faults[1:] if f.get("action") == "fault cleared"]
    if cleared:
        stop = cleared[-1]
    elif recovery is not None:
        stop = start + recovery
    else:
        stop = end_s
    return round(max(0.0, start - PRE_FAULT_S), 2), round(max(stop, start), 2)


async def watch_rollout(sd: StateDir, generation: int, t0: float,
                        until: float) -> dict[str, Any]:
    """Follow a rollout requested at ``generation`` until it is done with every replica on
    the new generation, or ``until`` (a monotonic time: the load's end) passes."""
    while True:
        state = sd.state()
        status = state.rollout.status if state.rollout else None
        new = state.generation
        reps = state.replicas
        on_new = sum(1 for r in reps if r.generation == new)
        done = (status == "done" and new > generation and bool(reps)
                and on_new == len(reps) and all(r.state == "ready" for r in reps))
        now = time.monotonic()
        if done or now >= until or status == "aborted":
            return {"status": status, "generation_before": generation,
                    "generation": new, "replicas": len(reps), "on_new": on_new,
                    "finished_s": round(now - t0, 2) if done else None}
        await asyncio.sleep(0.5)


async def wait_settled(sd: StateDir, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until every zone has its replicas ready and (if any) the database has a leader
    and a streaming replica for each other member: the state a drill starts from."""
    deadline = time.monotonic() + timeout
    while True:
        state = sd.state()
        reps = state.replicas
        zones = {r.zone for r in reps if r.state == "ready"}
        replicas_ok = len([r for r in reps if r.state == "ready"]) >= state.per_zone * len(zones) \
            and all(r.state == "ready" for r in reps) and zones
        members = state.database.members
        db_ok = not state.database.enabled or (
            sum(m.role == "leader" for m in members) == 1
            and all(m.state in ("running", "streaming") for m in members)
            and len(members) == len(Topology.model_validate_json(
                sd.topology_file.read_text()).zones))
        rolling = state.rollout is not None and state.rollout.status in ("rolling", "canary")
        if replicas_ok and db_ok and not rolling:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the deployment did not settle (lcha status shows why)")
        await asyncio.sleep(1)
