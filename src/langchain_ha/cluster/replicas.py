"""Replica and simulator processes as the supervisor manages them.

A replica is ``lcha serve APP`` on a free loopback port, in one zone, of one generation (a
rollout starts a new generation).  The supervisor probes each replica's ``/readyz`` every cycle:
an answer (200 ready, 503 draining or full) means alive; no answer within the timeout is a
missed check, and enough of them in a row mean the replica is hung and gets replaced.

Started by root, a replica runs as the system user ``lcha-serve`` (not the database's ``lcha``:
a compromised app gets neither root nor the database's files), with the environment its
caller passes: settings, the database password, provider keys; nothing else of the parent's.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from langchain_ha._proc import (
    BASE_ENV,
    Adopted,
    Child,
    free_port,
    port_is_free,
    python_argv,
    python_reach,
    system_user,
    user_ids,
)
from langchain_ha._runas import is_open
from langchain_ha.cluster.state import ReplicaRecord, ReplicaState, SimulatorRecord
from langchain_ha.cluster.topology import ProviderSpec, Topology
from langchain_ha.providers import ADMIN_TOKEN_ENV

STARTUP_NICE = 10
REPLICA_USER = "lcha-serve"
Proc = Child | Adopted


class NoFreeSlot(RuntimeError):
    """A zone's balancer slots are all taken."""


@dataclass
class Replica:
    """One replica process and what the supervisor last saw of it."""

    id: str
    zone: str
    port: int
    generation: int
    proc: Proc
    host: str = "127.0.0.1"
    """Where it listens: loopback, or its lab zone's address."""
    state: ReplicaState = "starting"
    started_at: float = field(default_factory=time.time)
    misses: int = 0
    inflight: int = 0
    room: int = 0
    """What its ``/readyz`` last said it would hold (running and queued); 0: not known."""
    ready: bool = False
    weight: int = 1
    drain_started: float | None = None
    ready_at: float | None = None
    app: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def record(self) -> ReplicaRecord:
        """Its entry in the state file."""
        return ReplicaRecord(id=self.id, zone=self.zone, port=self.port, host=self.host,
                             pid=self.proc.pid,
                             generation=self.generation, state=self.state, ready=self.ready,
                             inflight=self.inflight, room=self.room, misses=self.misses,
                             weight=self.weight, started_at=self.started_at,
                             ready_at=self.ready_at, app=self.app)


def drain_grace_s(topology: Topology) -> float:
    """How long a draining replica keeps accepting: until the balancer's active checks have
    surely marked it down (unhealthy_threshold failed checks, one interval + timeout each)."""
    checks = topology.balancer.checks
    return round((checks.unhealthy_threshold + 1) * (checks.interval_s + checks.timeout_s), 1)


def replica_marker(replica_id: str) -> str:
    return f"--replica-id {replica_id} "  # cmdline ends with NUL → space: az1-r1 ≠ az1-r10


def slot_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` free loopback ports below the ephemeral range (so no outgoing connection takes
    one while its slot is empty)."""
    rng = rng or random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port not in ports and port_is_free(port):
            ports.append(port)
    return ports


def replica_user() -> str | None:
    """The OS user replicas run as: ``lcha-serve`` (created if needed) when root, else None."""
    return system_user(REPLICA_USER) if os.geteuid() == 0 else None


def replica_inherit(topology: Topology) -> tuple[str, ...]:
    """What a replica takes from the supervisor's environment: the base variables, ``LCHA_*``
    settings, each real provider's key variable and ``replicas.env``."""
    keys = tuple(str(p.api_key_env) for p in topology.providers if p.api_key_env)
    return (*BASE_ENV, "LCHA_*", *keys, *topology.replicas.env)


def _app_dir(user: str | None) -> Path:
    """Where a replica starts (its app's module is imported from there): where ``lcha up``
    ran, if ``user`` may list it, else ``/``."""
    cwd = Path.cwd()
    if user is None:
        return cwd
    return cwd if is_open(cwd, *user_ids(user)) else Path("/")


def start_replica(topology: Topology, *, replica_id: str, zone: str, generation: int,
                  app: str, env: dict[str, str], logs: Path, port: int,
                  host: str = "127.0.0.1", enter: tuple[str, ...] = ()) -> Replica:
    """Start ``lcha serve APP`` on ``host:port`` (its balancer slot; ``enter``: its lab
    zone's namespace); readiness is probed by the supervisor and by the balancer's active
    health checks."""
    spec = topology.replicas
    user = replica_user()
    child = Child(
        python_argv("-m", "langchain_ha.cli", "serve", app, "--host", host, "--port", str(port),
                    "--zone", zone, "--replica-id", replica_id),
        name=f"replica-{replica_id}",
        env={**env, "LCHA_MAX_INFLIGHT": str(spec.max_inflight),
             "LCHA_DRAIN_TIMEOUT_S": str(spec.drain_timeout_s),
             "LCHA_REQUEST_TIMEOUT_S": str(spec.request_timeout_s),
              # Readiness fails at once on SIGTERM; the balancer's checks see it within this.
             "LCHA_DRAIN_GRACE_S": str(drain_grace_s(topology))},
        inherit=replica_inherit(topology), log_path=logs / f"replica-{replica_id}.log",
        user=user, reach=python_reach(), cwd=_app_dir(user), enter=enter,
    )
    # Start-up (imports, warm-up) runs at low priority so it does not take CPU from the
    # replicas serving traffic; once it is ready the supervisor sets ``serving_nice``.
    set_priority(child.pid, STARTUP_NICE)
    return Replica(id=replica_id, zone=zone, port=port, generation=generation, proc=child,
                   app=app, host=host)


def set_priority(pid: int, nice: int) -> None:
    """Set the nice value of every thread of ``pid`` (Linux nice values are per thread) and
    of its scheduler autogroup."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    # Each replica is its own session, hence its own autogroup where the kernel has
    # autogrouping on: then only the group's nice value weighs against other processes.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


def adopt_replica(entry: ReplicaRecord) -> Replica | None:
    """A replica recorded by an earlier supervisor, if its process still runs."""
    if entry.pid is None:
        return None
    proc = Adopted(entry.pid, name=f"replica-{entry.id}", marker=replica_marker(entry.id))
    if not proc.alive():
        return None
    return Replica(id=entry.id, zone=entry.zone, port=entry.port, generation=entry.generation,
                   proc=proc, state=entry.state, host=entry.host,
                   started_at=entry.started_at or time.time(), app=entry.app,
                   ready_at=entry.ready_at)


async def probe(client: httpx.AsyncClient, replica: Replica, timeout: float) -> None:
    """Update ``replica`` from its ``/readyz`` (ready flag, in-flight count, missed checks)."""
    try:
        resp = await client.get(f"{replica.url}/readyz", timeout=timeout)
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        replica.misses += 1
        replica.ready = False
        return
    replica.misses = 0
    replica.ready = resp.status_code == 200
    replica.inflight = int(body.get("inflight", 0)) if isinstance(body, dict) else 0
    room = body.get("room") if isinstance(body, dict) else None
    replica.room = room if isinstance(room, int) and room > 0 else 0


@dataclass
class Simulator:
    """A provider simulator process (the stand-in for an LLM SaaS)."""

    spec: ProviderSpec
    port: int
    proc: Proc
    host: str = "127.0.0.1"
    """Loopback, or the lab's hub (every zone reaches it there)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def record(self) -> SimulatorRecord:
        """Its entry in the state file."""
        return SimulatorRecord(name=self.spec.name, port=self.port, host=self.host,
                               pid=self.proc.pid, url=self.url)


def sim_marker(name: str, port: int) -> str:
    return f"--name {name} --port {port}"


def start_simulator(spec: ProviderSpec, logs: Path, port: int | None = None, *,
                    admin_token: str, host: str = "127.0.0.1") -> Simulator:
    """Start ``lcha sim`` for ``spec`` and wait until it answers.

    ``admin_token`` (the deployment's ``sim_admin_token`` secret) guards its admin API; it
    goes in the environment, never on the command line other users can read.
    """
    port = port or free_port()
    child = Child(
        python_argv("-m", "langchain_ha.cli", "sim", "--name", spec.name, "--port", str(port),
                    "--host", host,
                    "--latency-ms", str(spec.latency_ms), "--jitter-ms", str(spec.jitter_ms)),
        name=f"sim-{spec.name}", log_path=logs / f"sim-{spec.name}.log",
        env={ADMIN_TOKEN_ENV: admin_token})
    child.wait_http(f"http://{host}:{port}/v1/models", timeout=30)
    return Simulator(spec=spec, port=port, proc=child, host=host)


def adopt_simulator(spec: ProviderSpec, entry: SimulatorRecord) -> Simulator | None:
    """A simulator recorded by an earlier supervisor, if its process still runs."""
    if entry.pid is None:
        return None
    port = entry.port
    proc = Adopted(entry.pid, name=f"sim-{spec.name}", marker=sim_marker(spec.name, port))
    return Simulator(spec=spec, port=port, proc=proc, host=entry.host) if proc.alive() else None


def app_env(topology: Topology, sims: dict[str, Simulator], *, db_writer: str | None = None,
            db_reader: str | None = None) -> dict[str, str]:
    """What a replica's app is told (:class:`~langchain_ha.deployment.AppEnvironment` as env):
    ``LCHA_PROVIDERS`` (every provider by kind, in order, simulators by their URL), the tool
    and embeddings endpoints, the database.  Real providers' keys are inherited under the
    variables their entries name (:func:`replica_inherit`)."""
    return topology.app_environment(lambda spec: sims[spec.name].url, db_writer=db_writer,
                                    db_reader=db_reader).to_env()


def kill_now(proc: Child | Adopted) -> None:
    """SIGKILL a replica's whole process group (works on a SIGSTOPped one too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
