"""Short forms of the key drills against a real ``lcha up`` deployment, judged on their JSON.

Each asserts what the design promises: no failed request where none may fail, no
acknowledged write lost, right answers whenever an answer is not marked degraded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest

from langchain_ha.drills.drill import run_scenario
from langchain_ha.drills.scenarios import SCENARIOS
from tests.support.fixtures_up import Deployment

pytestmark = pytest.mark.timeout(900)


async def _drill(dep: Deployment, name: str, rps: float, duration_s: float,
                 **timing: Any) -> dict[str, Any]:
    scenario = dataclasses.replace(SCENARIOS[name], **timing)
    report = await run_scenario(dep.sd, scenario, rps=rps, duration_s=duration_s)
    assert report["requests"]["total"] == int(rps * duration_s)
    assert report["acked_writes_lost"] == 0
    # Every answer judged, degraded ones included, and all right.
    c = report["correctness"]
    assert c["judged"] == report["requests"]["ok"] + report["requests"]["degraded"] > 0
    exact = {k: v for k, v in c["by_component"].items()
             if k.startswith(("primary_llm", "tool:", "history:"))}
    assert c["plain"]["correct"] == c["plain"]["judged"], c
    assert all(v["correct"] == v["judged"] for v in exact.values()), c
    assert report["send_lag_ms"]["max"] is not None
    assert report["faults"], "the fault was injected"
    assert len(report["timeline"]) >= duration_s - 1
    return report


async def test_replica_crash(deployment: Deployment) -> None:
    r = await _drill(deployment, "replica-crash", rps=30, duration_s=12)
    assert r["requests"]["failed"] == 0, r["problems"]
    assert r["passed"], r["problems"]
    assert r["faults"][0]["action"] == "SIGKILL replica"


async def test_provider_outage(deployment: Deployment) -> None:
    # The outage (2.8 s) is shorter than the breakers' first open period (5 s), so their first
    # probe finds the provider back; the load runs on 7 s after it to show the recovery.
    r = await _drill(deployment, "provider-outage", rps=30, duration_s=14, at=0.2,
                     clear_at=0.45)
    assert r["requests"]["failed"] == 0, r["problems"]
    assert r["degraded_components"].get("primary_llm", 0) > 0  # fallbacks answered, and said so
    assert [f["action"] for f in r["faults"]] == ["provider outage", "fault cleared"]
    assert r["recovery_s"] is not None, (r["faults"], r["timeline"])


async def test_db_primary_loss(deployment: Deployment) -> None:
    r = await _drill(deployment, "db-primary-loss", rps=20, duration_s=36)
    assert r["availability"] >= 0.999, r["problems"]
    assert 0 < r["write_gap_s"] <= 25
    acked = r["acked_writes"]
    assert acked["checked"] > 0 and acked["checked_in_window"] > 0 and acked["lost"] == 0
    assert r["passed"], r["problems"]


async def test_primary_freeze(deployment: Deployment) -> None:
    # The primary's postgres frozen for 20 s (SIGSTOP of postmaster and backends): its guardian
    # finds it silent after 6 s and kills it, Patroni fails over to the sync standby.
    r = await _drill(deployment, "primary-freeze", rps=20, duration_s=36, clear_at=0.9)
    assert r["availability"] >= 0.999, r["problems"]
    assert 0 < r["write_gap_s"] <= 25, r["write_gap_s"]
    fence = r["fence"]
    assert fence["acked"] > 0 and fence["lost"] == 0, fence
    assert fence["primaries_at_once"] == 1, fence
    assert len(fence["members"]) >= 2, fence  # writes were acknowledged by the new primary too
    assert r["passed"], r["problems"]


async def test_vector_db_outage(deployment: Deployment) -> None:
    r = await _drill(deployment, "vector-db-outage", rps=20, duration_s=20)
    assert r["availability"] >= 0.999, r["problems"]
    assert r["requests"]["degraded"] > 0
    assert {"retrieval", "history:read", "history:write"} & set(r["degraded_components"])


async def test_capacity_ramps_send_fresh_keys_and_replays_are_detected(
    deployment: Deployment,
) -> None:
    from langchain_ha.drills.capacity import ramp
    from langchain_ha.drills.load import run_load

    kw = {"p99_ms": 10_000.0, "start": 10.0, "step": 10.0, "step_s": 3.0, "max_rps": 20.0,
          "hold_s": 3.0}
    first = await ramp(deployment.url, deployment.api_key, label="cluster", **kw)
    # The same ramp again (as the single-replica ramp followed the cluster one): fresh keys.
    second = await ramp(deployment.url, deployment.api_key, label="cluster", **kw)
    for r in (first, second):
        # Which rates pass depends on how busy the machine is; the structure does not.
        assert [st["requests"] for st in r["steps"]][:1] == [30]
        passed = [st["rps"] for st in r["steps"] if st["passed"]]
        # The ramp stops at the first step that fails; a busy machine may fail the first one
        # (a queue building in 3 s), and then nothing is held and the capacity is 0.
        assert all(st["passed"] for st in r["steps"][:-1]), r["steps"]
        holds = [(h["rps"], h["requests"]) for h in r["holds"]]
        if not passed:
            assert holds == [] and r["capacity_rps"] == 0, r
        else:
            # The highest rate found is then held (its own keys too) before it is called the
            # capacity; a failed hold falls back to the next lower rate.
            assert holds[0] == (max(passed), int(max(passed) * 3))
        assert r["capacity_rps"] == next((h["rps"] for h in r["holds"] if h["passed"]), 0)
        assert r["replayed"] == 0 and all(st["replayed"] == 0 for st in r["steps"] + r["holds"])
        if r["capacity_rps"]:
            assert r["send_lag_ms_at_capacity"]["max"] is not None
    # The detector sees a replay when there is one: the same keys sent twice through the
    # balancer (the idempotency store is the deployment's database, so whichever replica a
    # repeat reaches replays the first answer).
    url = deployment.url
    once = await run_load(url, deployment.api_key, rps=10, duration_s=2, run_id="replay-check")
    twice = await run_load(url, deployment.api_key, rps=10, duration_s=2, run_id="replay-check")
    assert not any(o.replayed for o in once)
    plain = [o for o in twice if o.kind != "stream"]
    assert plain and all(o.replayed and o.status == 200 for o in plain)


def test_drill_cli_writes_json_and_html(deployment: Deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, page = tmp_path / "tool.json", tmp_path / "tool.html"
    done = deployment.lcha("drill", "tool-outage", "--rps", "20", "--duration", "8",
                           "--json", str(out), "--html", str(page))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["scenario"] == "tool-outage" and report["requests"]["failed"] == 0
    assert report["degraded_components"].get("tool:order_status", 0) > 0
    assert "<svg" in page.read_text() and "tool-outage" in done.stdout
    bad = deployment.lcha("drill", "meteor-strike")
    assert bad.returncode == 2 and "replica-crash" in bad.stderr


async def test_guardian_death_never_leaves_patroni_unguarded(deployment: Deployment) -> None:
    """SIGKILL one member's guardian: the supervisor stops that Patroni cleanly and restarts
    the member under a new guardian; at no moment are two members writable."""
    import asyncio
    import os
    import signal

    from langchain_ha.cluster.dbcli import cluster_at

    cluster = cluster_at(deployment.sd.db_dir)
    zone = "az2"
    old = cluster.guardian_pid(zone)
    assert old
    os.kill(old, signal.SIGKILL)
    most_writable = 0
    deadline = asyncio.get_running_loop().time() + 90
    while asyncio.get_running_loop().time() < deadline:
        most_writable = max(most_writable, len(await asyncio.to_thread(cluster.writable_members)))
        new = cluster.guardian_pid(zone)
        if new and new != old and cluster.patroni_pid(zone):
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError("no new guardian for the member")
    assert most_writable <= 1
    assert "lost its guardian" in await _said(deployment, "lost its guardian")
    await asyncio.to_thread(cluster.wait_healthy, 120)


async def test_a_slow_heal_leaves_the_supervisor_loop_free(deployment: Deployment) -> None:
    """A member whose guardian died while its Patroni is frozen: the supervisor's clean stop
    waits 20 s for a Patroni that cannot answer SIGTERM.  That wait runs in the background:
    the supervisor keeps writing its state every cycle and says the heal is in progress."""
    import asyncio
    import os
    import signal
    import time

    from langchain_ha.cluster.dbcli import cluster_at

    cluster = cluster_at(deployment.sd.db_dir)
    leader = cluster.leader()
    zone = next(z for z in cluster.spec.zones
                if leader is None or cluster.zone_of(leader["name"]) != z)
    guardian, patroni = cluster.guardian_pid(zone), cluster.patroni_pid(zone)
    assert guardian and patroni
    os.kill(patroni, signal.SIGSTOP)
    os.kill(guardian, signal.SIGKILL)
    longest, last, began = 0.0, deployment.sd.state().updated_at, time.monotonic()
    try:
        while time.monotonic() - began < 90:
            await asyncio.sleep(0.1)
            now = deployment.sd.state().updated_at
            if now and last and now != last:
                longest = max(longest, now - last)
                last = now
            new = cluster.guardian_pid(zone)
            if new and new != guardian and cluster.patroni_pid(zone) not in (None, patroni):
                break
        else:
            raise AssertionError("the member was not restarted under a new guardian")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(patroni, signal.SIGCONT)
    took = time.monotonic() - began
    decisions = await _said(deployment, "lost its guardian")
    print(f"\nheal took {took:.1f} s; longest pause between state writes {longest:.2f} s")
    assert took >= 15, "the frozen Patroni was stopped faster than its 20 s wait"
    assert "healing the database, in progress" in decisions, decisions
    assert longest <= 1.5, f"the loop stalled {longest:.2f} s (a cycle is 0.5 s)"
    await asyncio.to_thread(cluster.wait_healthy, 120)


async def _said(dep: Deployment, text: str, timeout: float = 10.0) -> str:
    """The supervisor's decisions once one contains ``text`` (a background action's result is
    said on the cycle after it finished), or as they are after ``timeout``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        decisions = " ".join(dep.sd.state().decisions)
        if text in decisions or time.monotonic() > deadline:
            return decisions
        await asyncio.sleep(0.2)
