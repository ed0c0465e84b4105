"""The lab (``lcha up --demo --lab``): zones as network namespaces, cut and slowed for real.

Short forms of the network drills, judged on their JSON like the others: a partition of the
primary's zone fails over without losing an acknowledged write and the old primary rejoins
after the heal; ``lcha fault`` works by hand; ``lcha down`` leaves nothing of the lab behind
(the fixture asserts it).
"""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from langchain_ha.cluster.lab import Lab
from langchain_ha.drills.drill import run_scenario
from langchain_ha.drills.scenarios import SCENARIOS
from tests.support.fixtures_up import Deployment

pytestmark = pytest.mark.timeout(900)


def test_each_zone_runs_in_its_own_namespace_on_its_own_address(
        lab_deployment: Deployment) -> None:
    state = lab_deployment.sd.state()
    assert state.lab is not None
    lab = Lab.from_record(state.lab)
    assert lab.subnet.startswith("198.1")  # the benchmarking range 198.18.0.0/15
    for r in state.replicas:
        assert r.host == lab.address(r.zone)
        ns = subprocess.run(["ip", "netns", "identify", str(r.pid)], capture_output=True,
                            text=True, check=True).stdout.strip()
        assert ns == lab.netns(r.zone), (r.id, ns)
    hosts = {m.zone: m.host for m in state.database.members}
    assert hosts == {z: lab.address(z) for z in lab.zones}
    assert all(s.host == lab.hub_address for s in state.simulators.values())
    # No way out: no namespace has a default route.
    for zone in lab.zones:
        routes = subprocess.run(["ip", "-n", lab.netns(zone), "route", "show", "default"],
                                capture_output=True, text=True, check=True).stdout
        assert routes.strip() == ""


async def test_zone_partition_fails_over_and_the_old_primary_rejoins(
        lab_deployment: Deployment) -> None:
    # The primary's zone cut off both ways for 28 s (longer than Patroni's 20 s leader TTL)
    # of a 60 s drill at 10 req/s.
    scenario = dataclasses.replace(SCENARIOS["zone-partition"], at=0.2, clear_at=0.2 + 28 / 60)
    r = await run_scenario(lab_deployment.sd, scenario, rps=10, duration_s=60)
    assert r["faults"][0]["action"] == "partition (both ways)", r["faults"]
    print(f"\nzone-partition: write gap {r['write_gap_s']} s, balancer out after "
          f"{r['balancer_out_s']} s (bound {r['balancer_detection_bound_s']} s), rejoined "
          f"{r['rejoined_s']} s after the heal, fence {r['fence']}, "
          f"{r['requests']}")
    assert r["acked_writes_lost"] == 0 and r["acked_writes"]["checked_in_window"] > 0
    assert r["fence"]["lost"] == 0 and r["fence"]["primaries_at_once"] == 1, r["fence"]
    assert r["write_gap_s"] <= 25, r["write_gap_s"]
    assert r["rejoined_s"] is not None and r["rejoined_s"] <= 60
    assert r["balancer_out_s"] is not None
    assert r["availability"] >= 0.999, r["problems"]
    assert r["passed"], r["problems"]


async def test_zone_latency_runs_where_the_kernel_can_delay_or_says_why(
        lab_deployment: Deployment) -> None:
    from langchain_ha.drills.drillcli import not_applicable

    lab = Lab.from_record(lab_deployment.sd.state().lab or {})
    why = lab.can_delay()
    skipped = not_applicable(lab_deployment.sd, ["zone-latency", "zone-loss"])
    if why is not None:  # e.g. a Firecracker guest's kernel, built without netem
        assert list(skipped) == ["zone-latency"] and "netem" in skipped["zone-latency"]
        done = lab_deployment.lcha("drill", "zone-latency", "--rps", "5", "--duration", "5")
        assert done.returncode == 2 and "netem" in done.stderr
        return
    assert skipped == {}
    r = await run_scenario(lab_deployment.sd, SCENARIOS["zone-latency"], rps=10, duration_s=20)
    assert r["requests"]["failed"] == 0, r["problems"]


def test_lcha_fault_cuts_and_heals_a_zone_by_hand(lab_deployment: Deployment) -> None:
    dep = lab_deployment
    zones = Lab.from_record(dep.sd.state().lab or {}).zones
    cut = dep.lcha("fault", "partition", zones[-1], "--direction", "in")
    assert cut.returncode == 0, cut.stderr
    listed = dep.lcha("fault", "list")
    assert f"{zones[-1]} " in listed.stdout and "partition in" in listed.stdout, listed.stdout
    lossy = dep.lcha("fault", "loss", zones[0], "--percent", "5")
    assert lossy.returncode == 0, lossy.stderr
    assert "loss 5%" in dep.lcha("fault", "list").stdout
    healed = dep.lcha("fault", "heal")
    assert healed.returncode == 0, healed.stderr
    assert "partition" not in dep.lcha("fault", "list").stdout
    assert "loss" not in dep.lcha("fault", "list").stdout
    bad = dep.lcha("fault", "partition", "mars")
    assert bad.returncode == 2 and "ZONE" in bad.stderr and zones[0] in bad.stderr
    bad = dep.lcha("fault", "loss", zones[0], "--percent", "140")
    assert bad.returncode == 2 and "percent" in bad.stderr
