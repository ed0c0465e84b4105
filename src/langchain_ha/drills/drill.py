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

from langchain_ha._context import caller_scoped
from langchain_ha.cluster.state import StateDir, read_json
from langchain_ha.cluster.topology import Topology
from langchain_ha.drills.faults import Injector
from langchain_ha.drills.load import Outcome, run_load, summarize, timeline
from langchain_ha.drills.probe import WriteProbe, lost_history, wait_writable
from langchain_ha.drills.scenarios import Scenario, judge
from langchain_ha.serve.idempotency import scoped_key
from langchain_ha.serve.settings import caller_id, hash_key

SETTLE_TIMEOUT_S = 180.0


async def run_scenario(sd: StateDir, scenario: Scenario, *, rps: float,
                       duration_s: float) -> dict[str, Any]:
    """Run one scenario against the deployment in ``sd``; its report (see the README)."""
    state = sd.state()
    topo = Topology.model_validate_json(sd.topology_file.read_text())
    db = state.get("database") or {}
    if scenario.needs_db and not db.get("enabled"):
        raise ValueError(f"{scenario.name} needs the database (database.enabled: true)")
    await wait_settled(sd)
    run_id = f"{scenario.name}-{int(time.time())}"
    inj = Injector(sd)
    probe = WriteProbe(db["writer"], run_id) if db.get("enabled") else None
    probe_task = asyncio.create_task(probe.run()) if probe else None
    deadline_s = topo.replicas.request_timeout_s
    rate = rps * scenario.rps_factor
    if scenario.name == "overload":
        # Twice the measured capacity (lcha bench capacity), else twice the asked rate.
        measured = read_json(sd.root / "capacity.json").get("cluster", {}).get("capacity_rps")
        rate = 2 * float(measured) if measured else rate
    t0 = time.monotonic()
    api_key = sd.secrets()["api_key"]
    load = asyncio.create_task(run_load(state["balancer"]["url"], api_key,
                                        rps=rate, duration_s=duration_s, run_id=run_id,
                                        timeout_s=deadline_s + 10))
    faults: list[dict[str, Any]] = []
    try:
        if scenario.inject is not None:
            await asyncio.sleep(duration_s * scenario.at)
            done = await asyncio.to_thread(scenario.inject, inj)
            faults.append({"t": round(time.monotonic() - t0, 2), **done})
        if scenario.clear_at is not None:
            await asyncio.sleep(max(0.0, t0 + duration_s * scenario.clear_at - time.monotonic()))
            await asyncio.to_thread(inj.undo)
            faults.append({"t": round(time.monotonic() - t0, 2), "action": "fault cleared",
                           "target": scenario.name})
        outcomes = await load
    except BaseException:
        load.cancel()
        if probe is not None and probe_task is not None:
            probe.stop()
            await asyncio.gather(probe_task, return_exceptions=True)
        raise
    finally:
        await asyncio.to_thread(inj.undo)
    await wait_settled(sd)
    lost = 0
    if probe is not None and probe_task is not None:
        probe.stop()
        await probe_task
        await wait_writable(db["writer"])
        lost = await probe.lost() + await lost_history(
            db["writer"], [_stored_turn(api_key, o) for o in outcomes if o.acked_write])
    report: dict[str, Any] = {
        "scenario": scenario.name, "summary": scenario.summary, "rps": rate,
        "duration_s": duration_s, **summarize(outcomes),
        "recovery_s": recovery_s(outcomes, faults),
        "write_gap_s": probe.write_gap_s() if probe else None,
        "acked_writes_lost": lost, "faults": faults, "timeline": timeline(outcomes),
        "degraded_components": _components(outcomes),
    }
    report["problems"] = judge(scenario, report, deadline_s)
    report["passed"] = not report["problems"]
    return report


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


async def wait_settled(sd: StateDir, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until every zone has its replicas ready and (if any) the database has a leader
    and a streaming replica for each other member: the state a drill starts from."""
    deadline = time.monotonic() + timeout
    while True:
        state = sd.state()
        reps = state.get("replicas", [])
        per_zone = int(state.get("per_zone", 1))
        zones = {r["zone"] for r in reps if r["state"] == "ready"}
        replicas_ok = len([r for r in reps if r["state"] == "ready"]) >= per_zone * len(zones) \
            and all(r["state"] == "ready" for r in reps) and zones
        db = state.get("database") or {}
        members = db.get("members", [])
        db_ok = not db.get("enabled") or (
            sum(m.get("role") == "leader" for m in members) == 1
            and all(m.get("state") in ("running", "streaming") for m in members)
            and len(members) == len(Topology.model_validate_json(
                sd.topology_file.read_text()).zones))
        ro = state.get("rollout") or {}
        if replicas_ok and db_ok and ro.get("status") not in ("rolling", "canary"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the deployment did not settle (lcha status shows why)")
        await asyncio.sleep(1)
