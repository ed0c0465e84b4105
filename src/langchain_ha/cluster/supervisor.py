"""The supervisor: one loop that keeps a deployment as its topology says (``lcha up``).

Start-up goes in order, each step waiting for readiness: the database (Patroni members with
their raft DCS) → provider simulators → replicas → Caddy.  Then every cycle (0.5 s) it reads
operator requests, probes every replica, makes at most one decision and logs it as a sentence
(like Patroni's HA loop): replace a dead or hung replica (with backoff, as an auto-scaling
group replaces a failed instance), register a ready one with the load balancer, start or drain
one for a scale change or a rollout, restart a dead simulator, database member or Caddy.

It survives its own restart: a new supervisor adopts every process recorded in ``state.json``
that still runs (checked by PID and command line) and reconciles from there.

Run as ``python -m langchain_ha.cluster.supervisor STATE_DIR`` (``lcha up`` does this).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

from langchain_ha._proc import Adopted, Child, free_port, port_is_listening
from langchain_ha.cluster.balancer import CaddyBalancer, Upstream
from langchain_ha.cluster.dbtier import DbTier
from langchain_ha.cluster.replicas import (
    Replica,
    Simulator,
    adopt_replica,
    adopt_simulator,
    probe,
    provider_env,
    set_priority,
    start_replica,
    start_simulator,
)
from langchain_ha.cluster.rollout import Rollout
from langchain_ha.cluster.state import StateDir, write_json
from langchain_ha.cluster.topology import Topology

log = logging.getLogger("langchain_ha.supervisor")
CYCLE_S = 0.5
START_TIMEOUT_S = 120.0
WARMUP_QUESTION = {"question": "How do I reset my password?", "session_id": "lcha-warmup"}


class Supervisor:
    """Keeps replicas, simulators, the database and Caddy running as the topology says."""

    def __init__(self, state_dir: StateDir, topology: Topology) -> None:
        self.sd = state_dir
        self.topo = topology
        self.replicas: list[Replica] = []
        self.sims: dict[str, Simulator] = {}
        self.db = DbTier(topology, state_dir.db_dir)
        self.lb: CaddyBalancer | None = None
        self.caddy: Child | Adopted | None = None
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
        self.load_high = self.load_low = 0
        self.stopping = False
        self._next_index = 0
        self._last_heartbeat = 0.0
        self._client: httpx.AsyncClient | None = None
        secrets = state_dir.secrets()
        self.api_key = secrets["api_key"]
        self.admin_token = secrets["admin_token"]

    # -- start-up -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Bring everything up, then loop until SIGTERM/SIGINT; then stop everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            await self._bring_up()
            while not self.stopping:
                await self.cycle()
                await asyncio.sleep(CYCLE_S)
        except Exception as exc:
            log.exception("supervisor failed")
            self._say(f"failed: {type(exc).__name__}: {exc}", progress=True)
            self.phase = "failed"
            self._write_state()
        finally:
            await self._shutdown()

    def _request_stop(self) -> None:
        self.stopping = True

    async def _bring_up(self) -> None:
        prior = self.sd.state()
        self._adopt(prior)
        if self.topo.database.enabled:
            self._say(f"database: {self.db.describe()} …", progress=True)
            summary = await asyncio.to_thread(self.db.ensure_running)
            self._say(f"database: {summary}", progress=True)
        for spec in self.topo.providers:
            if spec.simulated and spec.name not in self.sims:
                port = prior.get("simulators", {}).get(spec.name, {}).get("port")
                self.sims[spec.name] = await asyncio.to_thread(
                    start_simulator, spec, self.sd.logs, _reuse(port))
                self._say(f"simulator {spec.name}: {self.sims[spec.name].url}", progress=True)
        want = sum(self._target(z) for z in self.topo.zones)
        self._say(f"replicas: starting {want} across zones {', '.join(self.topo.zones)} …",
                  progress=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while sum(r.state == "ready" for r in self.replicas) < want:
            if self.stopping:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not ready after {START_TIMEOUT_S:.0f}s "
                                   f"(see {self.sd.logs})")
            await self.cycle(balancer=False)
            await asyncio.sleep(0.2)
        self._say(f"replicas: {want} ready", progress=True)
        self._start_balancer(prior.get("balancer", {}))
        await self.cycle()
        await self._warm_up()
        self.phase = "ready"
        self._say(f"ready: {self.lb.url if self.lb else '?'}", progress=True)
        self._write_state()

    def _adopt(self, prior: dict[str, Any]) -> None:
        """Take over what an earlier supervisor left running."""
        self.generation = int(prior.get("generation", 1))
        self.apps = {int(k): v for k, v in prior.get("apps", {}).items()} or self.apps
        self.apps.setdefault(self.generation, self.topo.app)
        self.per_zone = int(prior.get("per_zone", self.per_zone))
        self.base_per_zone = int(prior.get("base_per_zone", self.base_per_zone))
        self.applied_seq = int(prior.get("applied_seq", 0))
        self._next_index = int(prior.get("next_index", 0))
        for entry in prior.get("replicas", []):
            replica = adopt_replica(entry)
            if replica is not None:
                self.replicas.append(replica)
        for spec in self.topo.providers:
            entry = prior.get("simulators", {}).get(spec.name)
            if spec.simulated and entry:
                sim = adopt_simulator(spec, entry)
                if sim is not None:
                    self.sims[spec.name] = sim
        adopted = len(self.replicas) + len(self.sims)
        if adopted:
            self._say(f"adopted {len(self.replicas)} replicas and {len(self.sims)} simulators "
                      "left running by an earlier supervisor", progress=True)

    def _start_balancer(self, prior: dict[str, Any]) -> None:
        port = self.topo.balancer.port or int(prior.get("port") or 0) or free_port()
        admin = int(prior.get("admin_port") or 0) or free_port()
        self.lb = CaddyBalancer(self.topo.balancer, port, admin, self.sd.root)
        pid = prior.get("pid")
        if pid:
            old = Adopted(int(pid), name="caddy", marker=str(self.lb.dir / "initial.json"))
            if old.alive() and port_is_listening(admin):
                self.caddy = old
                self._say(f"load balancer: adopted Caddy (pid {pid})", progress=True)
                return
        if port_is_listening(port):
            raise RuntimeError(f"balancer.port {port} is already in use: choose another "
                               "(lcha up --port P, or balancer.port in lcha.yaml)")
        self.caddy = self.lb.start()
        self._say(f"load balancer: Caddy on {self.lb.url} (admin 127.0.0.1:{admin})",
                  progress=True)

    async def _warm_up(self) -> None:
        """One answer through the load balancer (also loads the corpus into the database)."""
        assert self.lb is not None
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(20):
                try:
                    resp = await client.post(
                        f"{self.lb.url}/v1/invoke", json={"input": WARMUP_QUESTION},
                        headers={"Authorization": f"Bearer {self.api_key}"})
                    if resp.status_code == 200:
                        self._say("first answer through the load balancer: ok", progress=True)
                        return
                    last: object = f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = exc
                await asyncio.sleep(1)
        raise RuntimeError(f"no answer through the load balancer: {last}")

    # -- the loop -----------------------------------------------------------------------------

    async def cycle(self, *, balancer: bool = True) -> None:
        """One pass: requests, probes, at most one decision, balancer config, state file."""
        self._read_control()
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
                _kill_now(r.proc)
                why = "never became ready" if overdue else f"missed {r.misses} health checks"
                return f"replica {r.id} (pid {r.proc.pid}) {why}: killed, to be replaced"
        return None

    def _mark_ready(self) -> str | None:
        for r in self.replicas:
            if r.state == "starting" and r.ready:
                r.state = "ready"
                set_priority(r.proc.pid, 0)
                self.backoff.pop(r.zone, None)
                took = time.time() - r.started_at
                return (f"replica {r.id} ready on port {r.port} after {took:.1f}s: "
                        "registered with the load balancer")
        return None

    def _heal_infrastructure(self) -> str | None:
        for name, sim in list(self.sims.items()):
            if not sim.proc.alive():
                self.sims[name] = start_simulator(sim.spec, self.sd.logs, sim.port)
                return f"simulator {name} was gone: restarted on port {sim.port}"
        if self.lb is not None and self.caddy is not None and not self.caddy.alive():
            self.lb.upstreams = ()
            self.caddy = self.lb.start()
            return f"Caddy was gone: restarted on {self.lb.url}"
        if self.phase == "ready":
            return self.db.heal()
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
                r = self.start_replica(zone, serving)
                return f"zone {zone} has {len(live)} of {target} replicas: started {r.id}"
            if len(live) > target and all(r.state == "ready" for r in live):
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
        self.load_high = self.load_high + 1 if mean > spec.scale_up_inflight else 0
        self.load_low = self.load_low + 1 if mean < spec.scale_down_inflight else 0
        if self.load_high >= 6 and self.per_zone < spec.max_per_zone:
            if os.getloadavg()[0] >= (os.cpu_count() or 1):
                # One machine: more processes only help if it has idle CPU.
                self.load_high = 0
                return (f"mean in-flight {mean:.1f} per replica is high but this machine's CPU "
                        "is saturated: not scaling up")
            self.per_zone += 1
            self.load_high = 0
            return (f"mean in-flight {mean:.1f} per replica above {spec.scale_up_inflight} for "
                    f"3s: scaling up to {self.per_zone} per zone")
        if self.load_low >= 60 and self.per_zone > self.base_per_zone:
            self.per_zone -= 1
            self.load_low = 0
            return f"load low for 30s: scaling down to {self.per_zone} per zone"
        return None

    # -- actions ------------------------------------------------------------------------------

    def start_replica(self, zone: str, generation: int) -> Replica:
        """Start one replica of ``generation`` in ``zone``."""
        self._next_index += 1
        replica = start_replica(
            self.topo, replica_id=f"{zone}-r{self._next_index}", zone=zone,
            generation=generation, app=self.apps.get(generation, self.topo.app),
            env=self._replica_env(), logs=self.sd.logs)
        self.replicas.append(replica)
        return replica

    def drain(self, replica: Replica) -> None:
        """Take ``replica`` out of the balancer now; SIGTERM (drain) follows a moment later."""
        replica.state = "draining"
        replica.drain_started = time.time()

    def _drain_step(self) -> None:
        timeout = self.topo.replicas.drain_timeout_s
        for r in self.replicas:
            if r.state != "draining" or r.drain_started is None:
                continue
            waited = time.time() - r.drain_started
            if waited >= 1.0 and not getattr(r, "_termed", False):
                r.proc.signal(signal.SIGTERM)  # the balancer stopped sending a second ago
                r._termed = True  # type: ignore[attr-defined]
            elif waited > timeout + 5:
                _kill_now(r.proc)

    def _sync_balancer(self) -> None:
        assert self.lb is not None
        ups = [Upstream(r.port, weight=r.weight, standby=not self.topo.is_active(r.zone))
               for r in self.replicas if r.state == "ready"]
        try:
            self.lb.apply(ups)
        except (httpx.HTTPError, RuntimeError) as exc:
            self._say(f"load balancer update failed ({exc}); retrying next cycle")

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
        env = provider_env(self.topo, self.sims)
        env["LCHA_API_KEY_HASHES"] = hashlib.sha256(self.api_key.encode()).hexdigest()
        env["LCHA_ADMIN_TOKEN"] = self.admin_token
        if self.topo.database.enabled:
            env["LCHA_DB_WRITER"] = self.db.writer
            env["LCHA_DB_READER"] = self.db.reader
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
        log.info(sentence)
        self.decisions.append(f"{time.strftime('%H:%M:%S')} {sentence}")
        if progress:
            self.progress.append(sentence)
            self._write_state()

    def _write_state(self) -> None:
        lb = self.lb
        write_json(self.sd.state_file, {
            "supervisor": {"pid": os.getpid()},
            "phase": self.phase, "progress": self.progress, "decisions": list(self.decisions),
            "generation": self.generation, "apps": self.apps, "per_zone": self.per_zone,
            "base_per_zone": self.base_per_zone, "applied_seq": self.applied_seq,
            "next_index": self._next_index,
            "rollout": self.rollout.to_json() if self.rollout else None,
            "balancer": {"pid": self.caddy.pid if self.caddy else None,
                         "port": lb.port if lb else None, "admin_port": lb.admin_port if lb
                         else None, "url": lb.url if lb else None, "role": "balancer"},
            "simulators": {n: s.to_json() for n, s in self.sims.items()},
            "replicas": [r.to_json() for r in self.replicas],
            "database": self.db.to_json(),
            "updated_at": time.time(),
        })

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self._write_state()
        if self.caddy is not None:
            self.caddy.stop(timeout=5)
        await asyncio.gather(*(asyncio.to_thread(r.proc.stop, 10) for r in self.replicas))
        for sim in self.sims.values():
            sim.proc.stop(timeout=5)
        await asyncio.to_thread(self.db.stop)
        self.replicas.clear()
        self.sims.clear()
        self.caddy = None
        self.phase = "stopped"
        self._say("stopped: nothing left running")
        self._write_state()


def _kill_now(proc: Child | Adopted) -> None:
    """SIGKILL a replica's whole process group (works on a SIGSTOPped one too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _reuse(port: object) -> int | None:
    """An earlier port for a restarted simulator, if it is free (replicas keep their URLs)."""
    if isinstance(port, int) and not port_is_listening(port):
        return port
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m langchain_ha.cluster.supervisor STATE_DIR``."""
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sd = StateDir(Path(args[0]))
    topology = Topology.model_validate_json(sd.topology_file.read_text())
    asyncio.run(Supervisor(sd, topology).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
