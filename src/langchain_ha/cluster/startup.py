"""The supervisor's start-up: adopt what an earlier supervisor left, then start in order.

Database (Patroni members and their raft DCS) → provider simulators → replicas → the load
balancer (HAProxy or Caddy), each step waiting for readiness, then one answer through the load
balancer (which also loads the support bot's corpus into the database).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx

from langchain_ha._proc import Adopted, free_port, port_is_listening
from langchain_ha.cluster.balancer import Upstream
from langchain_ha.cluster.balancers import balancer_kind, make_balancer
from langchain_ha.cluster.lab import Lab, lab_id_for, lab_unsupported
from langchain_ha.cluster.placement import Placement
from langchain_ha.cluster.replicas import (
    adopt_replica,
    adopt_simulator,
    slot_ports,
    start_simulator,
)
from langchain_ha.cluster.state import BalancerRecord, DeploymentState, read_json
from langchain_ha.drills.profiles import profile_for

if TYPE_CHECKING:
    from langchain_ha.cluster.supervisor import Supervisor

START_TIMEOUT_S = 120.0


def _reuse(port: object) -> int | None:
    """An earlier port for a restarted simulator, if it is free (replicas keep their URLs)."""
    if isinstance(port, int) and not port_is_listening(port):
        return port
    return None


async def bring_up(sup: Supervisor) -> None:
    prior = sup.sd.state()
    if sup.topo.lab:
        await asyncio.to_thread(build_lab, sup, prior)
    adopt(sup, prior)
    if sup.topo.database.enabled:
        sup._say(f"database: {sup.db.describe()} …", progress=True)
        summary = await asyncio.to_thread(sup.db.ensure_running)
        sup._say(f"database: {summary}", progress=True)
    for spec in sup.topo.providers:
        if spec.simulated and spec.name not in sup.sims:
            earlier = prior.simulators.get(spec.name)
            port = earlier.port if earlier else None
            sup.sims[spec.name] = await asyncio.to_thread(
                start_simulator, spec, sup.sd.logs, _reuse(port),
                admin_token=sup.sim_admin_token, host=sup.placement.hub)
            sup._say(f"simulator {spec.name}: {sup.sims[spec.name].url}", progress=True)
    def want() -> int:
        return sum(sup._target(z) for z in sup.topo.zones)

    sup._say(f"replicas: starting {want()} across zones {', '.join(sup.topo.zones)} …",
             progress=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while sum(r.state == "ready" for r in sup.replicas) < want():
        if sup.stopping:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas not ready after {START_TIMEOUT_S:.0f}s "
                               f"(see {sup.sd.logs})")
        await sup.cycle(balancer=False)
        await asyncio.sleep(0.2)
    sup._say(f"replicas: {want()} ready", progress=True)
    start_balancer(sup, prior.balancer)
    if sup.prometheus.available():
        await asyncio.to_thread(sup.prometheus.start, prior.prometheus)
        sup._say(f"prometheus: {sup.prometheus.url} (alert rules loaded)", progress=True)
    await sup.cycle()
    await warm_up(sup)
    sup.phase = "ready"
    sup._say(f"ready: {sup.lb.url if sup.lb else '?'}", progress=True)
    sup._write_state()

def build_lab(sup: Supervisor, prior: DeploymentState) -> None:
    """The lab network: adopted from an earlier supervisor while its bridge is up (its
    processes live in those namespaces), else built anew."""
    zones = tuple(sup.topo.zones)
    if prior.lab:
        lab = Lab.from_record(prior.lab)
        if lab.zones == zones and lab.exists():
            sup.place(Placement.of(lab))
            sup._say(f"lab network {lab.lab_id}: adopted ({lab.subnet})", progress=True)
            return
    reason = lab_unsupported()
    if reason:
        raise RuntimeError(f"--lab: {reason}")
    lab = Lab.create(lab_id_for(sup.sd.root), zones)
    sup.place(Placement.of(lab))
    sup._say(f"lab network {lab.lab_id}: {lab.subnet}, hub {lab.hub_address}, "
             + ", ".join(f"{z} {lab.address(z)}" for z in zones)
             + " (one network namespace per zone, on an isolated bridge)", progress=True)


def adopt(sup: Supervisor, prior: DeploymentState) -> None:
    """Take over what an earlier supervisor left running (or lay out the balancer slots)."""
    sup.slots = {z: list(ports) for z, ports in prior.slots.items()}
    per_zone = sup.topo.replicas.max_per_zone + 1  # one extra for a rollout's surge replica
    if sorted(sup.slots) != sorted(sup.topo.zones) or any(
            len(v) != per_zone for v in sup.slots.values()):
        ports = iter(slot_ports(per_zone * len(sup.topo.zones)))
        sup.slots = {z: [next(ports) for _ in range(per_zone)] for z in sup.topo.zones}
    sup._next_index = prior.next_index
    for entry in prior.replicas:
        replica = adopt_replica(entry)
        if replica is not None:
            sup.replicas.append(replica)
    if sup.replicas:  # a live deployment: carry on where the last supervisor was
        sup.generation = prior.generation
        sup.apps = dict(prior.apps) or sup.apps
        sup.per_zone = prior.per_zone
        sup.base_per_zone = prior.base_per_zone
        sup.applied_seq = prior.applied_seq
    else:  # a fresh start: the topology decides, and old operator requests are history
        sup.applied_seq = int(read_json(sup.sd.control_file).get("seq", 0))
    sup.apps.setdefault(sup.generation, sup.topo.app)
    for spec in sup.topo.providers:
        sim_entry = prior.simulators.get(spec.name)
        if spec.simulated and sim_entry:
            sim = adopt_simulator(spec, sim_entry)
            if sim is not None:
                sup.sims[spec.name] = sim
    adopted = len(sup.replicas) + len(sup.sims)
    if adopted:
        sup._say(f"adopted {len(sup.replicas)} replicas and {len(sup.sims)} simulators "
                  "left running by an earlier supervisor", progress=True)

def start_balancer(sup: Supervisor, prior: BalancerRecord) -> None:
    port = sup.topo.balancer.port or prior.port or free_port()
    pid = prior.pid
    kind = balancer_kind(sup.topo)
    if pid:  # an earlier supervisor's balancer keeps its kind (prior states are Caddy's)
        old_kind = prior.kind or "caddy"
        lb = make_balancer(sup.topo, port, sup.sd.root, old_kind)
        old = Adopted(pid, name=old_kind, marker=prior.marker or lb.marker)
        if old.alive() and lb.answers():
            sup.lb, sup.lb_proc = lb, old
            lb.upstreams = tuple(Upstream(**u) for u in prior.upstreams)
            sup._say(f"load balancer: adopted {old_kind} (pid {pid})", progress=True)
            return
    sup.lb = make_balancer(sup.topo, port, sup.sd.root, kind)
    if port_is_listening(port):
        raise RuntimeError(f"balancer.port {port} is already in use: choose another "
                           "(lcha up --port P, or balancer.port in lcha.yaml)")
    sup.lb_proc = sup.lb.start(sup.upstreams())
    sup._say(f"load balancer: {sup.lb.kind} on {sup.lb.url} (its control socket: "
             f"{sup.lb.admin_socket})", progress=True)

async def warm_up(sup: Supervisor) -> None:
    """One right answer to the app profile's warm-up request through the load balancer (the
    demo's also loads the corpus into the database)."""
    assert sup.lb is not None
    profile = profile_for(sup.topo)
    probe = profile.warmup()
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(20):
            try:
                resp = await client.post(
                    sup.lb.url + probe.path, json=probe.body,
                    headers={"Authorization": f"Bearer {sup.api_key}"})
                if resp.status_code == 200:
                    body = resp.json()
                    right = probe.correct(body.get("output"), body.get("degraded") or [])
                    sup._say(f"first answer through the load balancer ({profile.name} "
                             f"profile): {'ok' if right else 'answered, but judged wrong'}",
                             progress=True)
                    return
                last: object = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = exc
            await asyncio.sleep(1)
    raise RuntimeError(f"no answer through the load balancer: {last}")
