"""The supervisor: one loop that keeps a deployment as its topology says (``lcha up``).

Start-up goes in order, each step waiting for readiness: the database (Patroni members with
their raft DCS) → provider simulators → replicas → the load balancer (HAProxy or Caddy).
Then every cycle (0.5 s) it reads operator requests, probes every replica, makes at most one
decision and logs it as a sentence (like Patroni's HA loop): replace a dead or hung replica
(with backoff, as an auto-scaling group replaces a failed instance), register a ready one with
the load balancer, start or drain one for a scale change or a rollout, restart a dead
simulator, database member or load balancer.  Slow actions (restarting a simulator, a member
or the balancer, asking Patroni for its members, updating the balancer) run in the background
(:mod:`~langchain_ha.cluster.background`): the loop keeps deciding while they run, and says
"…, in progress" until they are done.  Durations are measured with ``time.monotonic()``, never
counted in cycles.

It survives its own restart: a new supervisor adopts every process recorded in ``state.json``
that still runs (checked by PID and command line) and reconciles from there.

Run as ``python -m langchain_ha.cluster.supervisor STATE_DIR`` (``lcha up`` does this).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path

import httpx

from langchain_ha._proc import Adopted, Child, port_is_free
from langchain_ha._redact import redact, redact_logging
from langchain_ha.cluster.background import SlowActions
from langchain_ha.cluster.balancer import LoadBalancer, Upstream
from langchain_ha.cluster.dbtier import DbTier
from langchain_ha.cluster.hostload import CpuSampler, room_to_scale, usable_cpus
from langchain_ha.cluster.monitor import LocalPrometheus
from langchain_ha.cluster.placement import Placement
from langchain_ha.cluster.replicas import (
    NoFreeSlot,
    Replica,
    Simulator,
    app_env,
    drain_grace_s,
    kill_now,
    probe,
    set_priority,
    start_replica,
    start_simulator,
)
from langchain_ha.cluster.rollout import Rollout
from langchain_ha.cluster.startup import START_TIMEOUT_S, bring_up
from langchain_ha.cluster.state import (
    BalancerRecord,
    DeploymentState,
    StateDir,
    SupervisorRecord,
)
from langchain_ha.cluster.topology import Topology

log = logging.getLogger("langchain_ha.supervisor")
CYCLE_S = 0.5
SCALE_UP_AFTER_S = 3.0
"""Mean in-flight above ``scale_up_inflight`` this long adds a replica per zone."""
SCALE_DOWN_AFTER_S = 30.0


class Supervisor:
    """Keeps replicas, simulators, the database and the load balancer as the topology says."""

    def __init__(self, state_dir: StateDir, topology: Topology) -> None:
        self.sd = state_dir
        self.topo = topology
        self.replicas: list[Replica] = []
        self.slots: dict[str, list[int]] = {}
        self.sims: dict[str, Simulator] = {}
        self.placement = Placement()
        """Loopback, until start-up builds or adopts a lab (:meth:`place`)."""
        self.db = DbTier(topology, state_dir.db_dir)
        self.lb: LoadBalancer | None = None
        self.lb_proc: Child | Adopted | None = None
        self.generation = 1
        self.apps: dict[int, str] = {1: topology.app}
        self.per_zone = topology.replicas.per_zone
        self.base_per_zone = topology.replicas.per_zone
        self.rollout: Rollout | None = None
        self.applied_seq = 0
        self.phase = "starting"
        self.progress: list[str] = []
        self.decisions: deque[str] = deque(maxlen=40)
        self.backoff: dict[str, tuple[int, float]] = {}
        self.load_high_since: float | None = None
        self.load_low_since: float | None = None
        self.slow = SlowActions()
        self.stopping = False
        self._next_index = 0
        self._last_heartbeat = 0.0
        self._client: httpx.AsyncClient | None = None
        self.cpu = CpuSampler()
        self.prometheus = LocalPrometheus(topology, state_dir.root)
        secrets = state_dir.secrets()
        self.api_key = secrets["api_key"]
        self.admin_token = secrets["admin_token"]
        self.sim_admin_token = secrets["sim_admin_token"]

    # -- start-up -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Bring everything up, then loop until SIGTERM/SIGINT; then stop everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            await bring_up(self)
        except Exception as exc:
            log.exception("start-up failed")
            self._say(f"failed: {type(exc).__name__}: {exc}", progress=True)
            self.phase = "failed"
            self._write_state()
            await self._shutdown()
            return
        while not self.stopping:
            try:
                await self.cycle()
            except Exception as exc:
                # A bug or a surprise in one cycle must never take the deployment down with
                # the supervisor: say it, keep everything running, try again next cycle.
                log.exception("cycle failed")
                self._say(f"cycle failed ({type(exc).__name__}: {exc}); everything keeps "
                          "running, next cycle in a second")
                await asyncio.sleep(1)
            await asyncio.sleep(CYCLE_S)
        await self._shutdown()

    def _request_stop(self) -> None:
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------

    async def cycle(self, *, balancer: bool = True) -> None:
        """One pass: requests, probes, at most one decision, balancer config, state file."""
        self._read_control()
        for sentence in self.slow.collect():
            self._say(sentence)
        self.cpu.sample()
        timeout = self.topo.balancer.checks.timeout_s
        if self._client is None:  # one client: building one costs an SSL context each time
            self._client = httpx.AsyncClient()
        await asyncio.gather(*(probe(self._client, r, timeout) for r in self.replicas))
        decision = self._decide()
        if decision:
            self._say(decision)
        elif time.monotonic() - self._last_heartbeat > 30:
            self._last_heartbeat = time.monotonic()
            self._say(f"no action: {sum(r.state == 'ready' for r in self.replicas)} replicas "
                      f"ready, generation {self.generation}")
        self._drain_step()
        if balancer and self.lb is not None:
            self._sync_balancer()
        if self.prometheus.proc is not None:
            self.prometheus.set_targets([(r.zone, f"{r.host}:{r.port}") for r in self.replicas
                                         if r.state == "ready"])
        if self.db.stale and not self.slow.running("database view"):
            self.slow.start("database view", "asking Patroni for its members", self.db.refresh)
        self._write_state()

    def _decide(self) -> str | None:
        for step in (self._reap, self._kill_hung, self._mark_ready, self._heal_infrastructure,
                     self._rollout_step, self._reconcile_zones, self._autoscale):
            decision = step()
            if decision:
                return decision
        return None

    def _reap(self) -> str | None:
        for r in self.replicas:
            if not r.proc.alive():
                self.replicas.remove(r)
                code = r.proc.proc.returncode if isinstance(r.proc, Child) else None
                if r.state == "draining":
                    return f"replica {r.id} drained and exited"
                self._fail(r.zone)
                return (f"replica {r.id} (pid {r.proc.pid}) exited unexpectedly (code {code}): "
                        f"removed from the balancer; a replacement follows")
        return None

    def _kill_hung(self) -> str | None:
        limit = self.topo.replicas.liveness_failures
        for r in self.replicas:
            overdue = r.state == "starting" and time.time() - r.started_at > START_TIMEOUT_S
            if (r.state == "ready" and r.misses >= limit) or overdue:
                kill_now(r.proc)
                why = "never became ready" if overdue else f"missed {r.misses} health checks"
                return f"replica {r.id} (pid {r.proc.pid}) {why}: killed, to be replaced"
        return None

    def _mark_ready(self) -> str | None:
        for r in self.replicas:
            if r.state == "starting" and r.ready:
                r.state = "ready"
                r.ready_at = time.time()
                set_priority(r.proc.pid, self.topo.replicas.serving_nice)
                self.backoff.pop(r.zone, None)
                took = time.time() - r.started_at
                return (f"replica {r.id} ready on port {r.port} after {took:.1f}s: the "
                        "balancer's checks take it in")
        return None

    def _heal_infrastructure(self) -> str | None:
        for name, sim in list(self.sims.items()):
            key = f"simulator {name}"
            if not sim.proc.alive() and not self.slow.running(key):
                def restarted(new: Simulator, name: str = name) -> str:
                    self.sims[name] = new
                    return f"simulator {name} restarted on port {new.port}"

                restart = functools.partial(start_simulator, sim.spec, self.sd.logs, sim.port,
                                            admin_token=self.sim_admin_token,
                                            host=self.placement.hub)
                return f"simulator {name} was gone; " + self.slow.start(
                    key, f"restarting simulator {name} on port {sim.port}", restart, restarted)
        lb = self.lb
        if (lb is not None and self.lb_proc is not None and not self.lb_proc.alive()
                and not self.slow.running("load balancer")):
            def lb_started(proc: Child) -> str:
                self.lb_proc = proc
                return f"{lb.kind} (the load balancer) restarted on {lb.url}"

            upstreams = self.upstreams()

            def restart_lb() -> Child:
                lb.cleanup()
                return lb.start(upstreams)

            return f"{lb.kind} (the load balancer) was gone; " + self.slow.start(
                "load balancer", f"restarting {lb.kind}", restart_lb, lb_started)
        if self.phase == "ready" and self.db.enabled and not self.slow.running("database"):
            # Cheap when nothing is wrong; a member's clean stop and restart can take 20 s.
            self.slow.start("database", "healing the database", self.db.heal, lambda s: s)
        return None

    def _rollout_step(self) -> str | None:
        if self.rollout is None or self.rollout.finished:
            return None
        return self.rollout.step(self)

    def _reconcile_zones(self) -> str | None:
        serving = self.rollout.serving_generation(self) if self.rollout else self.generation
        for zone in self.topo.zones:
            live = [r for r in self.replicas if r.zone == zone and r.state != "draining"
                    and not (self.rollout and self.rollout.is_canary(r))]
            target = self._target(zone)
            if len(live) < target:
                if not self._may_start(zone):
                    continue
                try:
                    r = self.start_replica(zone, serving)
                except NoFreeSlot as exc:
                    self._fail(zone)
                    return str(exc)
                return f"zone {zone} has {len(live)} of {target} replicas: started {r.id}"
            if len(live) > target and all(self.serving(r) for r in live):
                victim = sorted(live, key=lambda r: (r.generation, -r.started_at))[0]
                self.drain(victim)
                return f"zone {zone} has {len(live)} of {target} replicas: draining {victim.id}"
        return None

    def _autoscale(self) -> str | None:
        ready = [r for r in self.replicas if r.state == "ready"]
        if not ready or (self.rollout and not self.rollout.finished):
            return None
        spec = self.topo.replicas
        mean = sum(r.inflight for r in ready) / len(ready)
        now = time.monotonic()
        high = mean > spec.scale_up_inflight
        low = mean < spec.scale_down_inflight
        self.load_high_since = (self.load_high_since or now) if high else None
        self.load_low_since = (self.load_low_since or now) if low else None
        if (self.load_high_since is not None and now - self.load_high_since >= SCALE_UP_AFTER_S
                and self.per_zone < spec.max_per_zone):
            self.load_high_since = None
            idle, cpus, more = self.cpu.idle_fraction(), usable_cpus(), len(self.topo.zones)
            if not room_to_scale(idle, cpus, more):
                return (f"mean in-flight {mean:.1f} per replica is high, but {more} more "
                        f"replicas need {more} idle cores and this machine has "
                        f"{idle * cpus:.1f} of {cpus}: not scaling up")
            self.per_zone += 1
            return (f"mean in-flight {mean:.1f} per replica above {spec.scale_up_inflight} for "
                    f"{SCALE_UP_AFTER_S:g}s: scaling up to {self.per_zone} per zone")
        if (self.load_low_since is not None and now - self.load_low_since >= SCALE_DOWN_AFTER_S
                and self.per_zone > self.base_per_zone):
            self.per_zone -= 1
            self.load_low_since = None
            return f"load low for {SCALE_DOWN_AFTER_S:g}s: scaling down to {self.per_zone} per zone"
        return None

    # -- actions ------------------------------------------------------------------------------

    def start_replica(self, zone: str, generation: int) -> Replica:
        """Start one replica of ``generation`` in a free balancer slot of ``zone``."""
        taken = {r.port for r in self.replicas}
        port = next((p for p in self.slots.get(zone, []) if p not in taken and port_is_free(p)),
                    None)
        if port is None:
            raise NoFreeSlot(f"zone {zone}: every balancer slot is taken "
                             f"({len(self.slots.get(zone, []))} = max_per_zone + 1)")
        self._next_index += 1
        replica = start_replica(
            self.topo, replica_id=f"{zone}-r{self._next_index}", zone=zone,
            generation=generation, app=self.apps.get(generation, self.topo.app),
            env=self._replica_env(), logs=self.sd.logs, port=port,
            host=self.placement.host(zone), enter=self.placement.enter_zone(zone))
        self.replicas.append(replica)
        return replica

    def drain(self, replica: Replica) -> None:
        """Drain ``replica``: SIGTERM makes its /readyz fail, so the balancer's checks take it
        out while it still serves (its drain grace), then it finishes what it holds."""
        replica.state = "draining"
        replica.drain_started = time.time()
        replica.proc.signal(signal.SIGTERM)

    def serving(self, replica: Replica) -> bool:
        """Ready long enough that the balancer's active checks have surely taken it in."""
        checks = self.topo.balancer.checks
        settle = (checks.healthy_threshold + 1) * checks.interval_s
        return (replica.state == "ready" and replica.ready_at is not None
                and time.time() - replica.ready_at >= settle)

    def _drain_step(self) -> None:
        timeout = self.topo.replicas.drain_timeout_s + drain_grace_s(self.topo)
        for r in self.replicas:
            if r.state == "draining" and r.drain_started is not None and (
                    time.time() - r.drain_started > timeout + 5):
                kill_now(r.proc)

    def _sync_balancer(self) -> None:
        """The balancer lists every slot all the time (no reload when replicas come and go);
        what changes is a canary's weights and, for HAProxy, each replica's room (its
        ``maxconn``, through the runtime API).  Applied in the background: a balancer whose
        control socket is slow must not hold the loop."""
        lb = self.lb
        assert lb is not None
        if self.slow.running("balancer update"):
            return
        upstreams = self.upstreams()

        def applied(_: None) -> None:
            return None

        def apply() -> None:
            try:
                lb.apply(upstreams)
            except (httpx.HTTPError, RuntimeError, OSError) as exc:
                raise RuntimeError(f"load balancer update failed ({exc})") from exc

        self.slow.start("balancer update", "updating the load balancer", apply, applied)

    def upstreams(self) -> list[Upstream]:
        """Every balancer slot, in zone order: a replica's weight, standby for a passive zone,
        the room its ``/readyz`` last reported (``max_requests``)."""
        weight = {r.port: r.weight for r in self.replicas if r.state != "draining"}
        occupied = {r.port for r in self.replicas}
        # A replica that has not said its room yet may take what its settings allow.
        ceiling = self.topo.replicas.max_inflight
        room = {r.port: r.room or ceiling for r in self.replicas}
        return [Upstream(port, weight=weight.get(port, 1), standby=not self.topo.is_active(zone),
                         occupied=port in occupied, max_requests=room.get(port, ceiling),
                         host=self.placement.host(zone))
                for zone in self.topo.zones for port in self.slots.get(zone, [])]

    def place(self, placement: Placement) -> None:
        """Run the zones where ``placement`` says (a lab's namespaces): before anything
        starts, since the database members' addresses follow from it."""
        self.placement = placement
        self.db = DbTier(self.topo, self.sd.db_dir, placement)

    def _target(self, zone: str) -> int:
        return self.per_zone

    def _may_start(self, zone: str) -> bool:
        _, until = self.backoff.get(zone, (0, 0.0))
        return time.monotonic() >= until

    def _fail(self, zone: str) -> None:
        fails, _ = self.backoff.get(zone, (0, 0.0))
        delay = min(30.0, 0.5 * 2 ** fails) if fails else 0.0
        self.backoff[zone] = (fails + 1, time.monotonic() + delay)

    def _replica_env(self) -> dict[str, str]:
        db = self.topo.database.enabled
        env = app_env(self.topo, self.sims, db_writer=self.db.writer if db else None,
                      db_reader=self.db.reader if db else None)
        env["LCHA_API_KEY_HASHES"] = hashlib.sha256(self.api_key.encode()).hexdigest()
        env["LCHA_ADMIN_TOKEN"] = self.admin_token
        if db:
            env["PGPASSWORD"] = self.db.app_password
        return env

    def _read_control(self) -> None:
        for req in self.sd.requests_after(self.applied_seq):
            self.applied_seq = int(req["seq"])
            if req.get("kind") == "scale":
                spec = self.topo.replicas
                n = max(spec.min_per_zone, min(spec.max_per_zone, int(req.get("per_zone", 1))))
                self.per_zone = self.base_per_zone = n
                self._say(f"operator asked for {n} replicas per zone")
            elif req.get("kind") == "rollout":
                if self.rollout is not None and not self.rollout.finished:
                    self._say(f"rollout request {req['seq']} ignored: rollout "
                              f"{self.rollout.id} is still running")
                else:
                    self.rollout = Rollout.begin(self, req)

    # -- state and shutdown -------------------------------------------------------------------

    def _say(self, sentence: str, *, progress: bool = False) -> None:
        sentence = redact(sentence)
        log.info(sentence)
        self.decisions.append(f"{time.strftime('%H:%M:%S')} {sentence}")
        if progress:
            self.progress.append(sentence)
            self._write_state()

    def _write_state(self) -> None:
        lb_pid = self.lb_proc.pid if self.lb_proc else None
        self.sd.write_state(DeploymentState(
            supervisor=SupervisorRecord(pid=os.getpid()),
            phase=self.phase, progress=list(self.progress), decisions=list(self.decisions),
            generation=self.generation, apps=dict(self.apps), per_zone=self.per_zone,
            base_per_zone=self.base_per_zone, applied_seq=self.applied_seq,
            next_index=self._next_index, slots=self.slots,
            rollout=self.rollout.record() if self.rollout else None,
            balancer=self.lb.record(lb_pid) if self.lb else BalancerRecord(),
            simulators={n: s.record() for n, s in self.sims.items()},
            replicas=[r.record() for r in self.replicas],
            database=self.db.record(), prometheus=self.prometheus.record(),
            lab=self.placement.lab.record() if self.placement.lab else None,
            updated_at=time.time(),
        ))

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self._write_state()
        await self.slow.wait_all(timeout=30)
        if self.lb_proc is not None:
            self.lb_proc.stop(timeout=5)
            if self.lb is not None:
                self.lb.cleanup()
        self.prometheus.stop()
        await asyncio.gather(*(asyncio.to_thread(r.proc.stop, 10) for r in self.replicas))
        for sim in self.sims.values():
            sim.proc.stop(timeout=5)
        await asyncio.to_thread(self.db.stop)
        if self.placement.lab is not None:
            await asyncio.to_thread(self.placement.lab.destroy)
            self._say(f"lab network {self.placement.lab.lab_id} removed (namespaces, links, "
                      "rules)")
        self.replicas.clear()
        self.sims.clear()
        self.lb_proc = None
        self.phase = "stopped"
        self._say("stopped: nothing left running")
        self._write_state()


def main(argv: list[str] | None = None) -> int:
    """``python -m langchain_ha.cluster.supervisor STATE_DIR``."""
    args = argv if argv is not None else sys.argv[1:]
    fmt = "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=fmt)
    redact_logging(fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sd = StateDir(Path(args[0]))
    topology = Topology.model_validate_json(sd.topology_file.read_text())
    asyncio.run(Supervisor(sd, topology).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
