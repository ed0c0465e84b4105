"""Real faults, injected into a running deployment found through its state directory.

Processes are killed or stopped by PID (SIGKILL, SIGSTOP/SIGCONT), providers are broken
through the simulators' ``/_faults`` API, the database through its Patroni members.  Every
injection returns what it did (``{action, target}``) for the drill's report, and every fault
that must be undone (a stopped process, a simulator fault) registers its undo.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from langchain_ha.cluster.dbcli import cluster_at
from langchain_ha.cluster.guardian import signal_postgres_tree
from langchain_ha.cluster.lab import Lab
from langchain_ha.cluster.patroni_config import member_name
from langchain_ha.cluster.state import DeploymentState, MemberRecord, ReplicaRecord, StateDir
from langchain_ha.providers import admin_headers

Undo = Callable[[], None]


@dataclass
class Injector:
    """Fault actions against the deployment in ``sd``; ``undo()`` restores what can be."""

    sd: StateDir
    undos: list[Undo] = field(default_factory=list)

    @property
    def state(self) -> DeploymentState:
        return self.sd.state()

    def replicas(self, zone: str | None = None) -> list[ReplicaRecord]:
        return [r for r in self.state.replicas
                if r.state == "ready" and r.pid and (zone is None or r.zone == zone)]

    def members(self) -> list[MemberRecord]:
        return list(self.state.database.members)

    def leader(self) -> MemberRecord:
        leader = next((m for m in self.members() if m.role == "leader"), None)
        if leader is None:
            raise RuntimeError("the database has no leader to fail")
        return leader

    # -- processes ----------------------------------------------------------------------------

    def kill_replica(self, zone: str | None = None) -> dict[str, str]:
        victim = self.replicas(zone)[0]
        os.kill(_pid_of(victim), signal.SIGKILL)
        return {"action": "SIGKILL replica", "target": f"{victim.id} (pid {victim.pid})"}

    def stop_replica(self) -> dict[str, str]:
        """SIGSTOP: the process holds its sockets but never answers (a gray failure)."""
        victim = self.replicas()[0]
        pid = _pid_of(victim)
        os.kill(pid, signal.SIGSTOP)
        self.undos.append(lambda: _signal(pid, signal.SIGCONT))
        return {"action": "SIGSTOP replica", "target": f"{victim.id} (pid {pid})"}

    def kill_member(self, member: MemberRecord) -> dict[str, str]:
        """SIGKILL a database member's guardian, Patroni (and its raft DCS member), postgres."""
        for pid in (member.guardian_pid, member.patroni_pid, member.postgres_pid):
            if pid:
                _signal(pid, signal.SIGKILL)
        return {"action": "SIGKILL db member (guardian, Patroni + raft, postgres)",
                "target": f"{member.name} ({member.role})"}

    def kill_primary(self) -> dict[str, str]:
        return self.kill_member(self.leader())

    def freeze_primary(self) -> dict[str, str]:
        """SIGSTOP the primary's postmaster and every backend: postgres alive, silent."""
        leader = self.leader()
        data = Path(str(self.state.database.dir)) / member_name(str(leader.zone)) / "data"
        pids = signal_postgres_tree(data, signal.SIGSTOP)
        if not pids:
            raise RuntimeError(f"{leader.name} has no running postgres to freeze")
        self.undos.append(lambda: _signal_all(pids, signal.SIGCONT))
        return {"action": "SIGSTOP the primary's postgres (postmaster and backends)",
                "target": f"{leader.name} ({len(pids)} processes)"}

    def kill_all_members(self) -> dict[str, str]:
        for member in self.members():
            self.kill_member(member)
        return {"action": "SIGKILL every db member", "target": "database"}

    def zone_outage(self) -> dict[str, str]:
        """Every process of the primary's zone: its replicas and its database member."""
        leader = self.leader()
        zone = str(leader.zone)
        for r in self.replicas(zone):
            _signal(_pid_of(r), signal.SIGKILL)
        self.kill_member(leader)
        return {"action": "SIGKILL every process of a zone", "target": f"{zone} (primary's zone)"}

    def switchover(self) -> dict[str, str]:
        leader = self.leader()
        candidate = next((m for m in self.members() if m.role == "sync_standby"), None)
        body = {"leader": leader.name, **({"candidate": candidate.name} if candidate else {})}
        cluster = cluster_at(self.sd.db_dir)
        resp = httpx.post(f"{cluster.rest_url(str(leader.zone))}/switchover", json=body,
                          timeout=30, auth=cluster.rest_auth)
        resp.raise_for_status()
        return {"action": "patroni switchover", "target": f"{leader.name} -> "
                f"{candidate.name if candidate else 'any'}"}

    def rollout(self) -> dict[str, str]:
        seq = self.sd.request("rollout", canary=None, hold_s=0, app=None)
        return {"action": "rolling deploy", "target": f"request {seq}"}

    # -- networks (a lab: lcha up --lab) -----------------------------------------------------

    def lab(self) -> Lab:
        """The deployment's lab network (its zones' namespaces)."""
        record = self.state.lab
        if not record:
            raise RuntimeError("network faults need a lab deployment (lcha up --lab)")
        return Lab.from_record(record)

    def _other_zone(self) -> str:
        """A zone without the database primary (the last such in topology order)."""
        lab = self.lab()
        leader = next((m for m in self.members() if m.role == "leader"), None)
        others = [z for z in lab.zones if leader is None or z != leader.zone]
        return others[-1]

    def partition_primary_zone(self) -> dict[str, str]:
        """Silently drop every packet to and from the primary's zone."""
        lab, zone = self.lab(), str(self.leader().zone)
        lab.partition(zone)
        self.undos.append(lambda: lab.heal(zone))
        return {"action": "partition (both ways)", "target": f"{zone} (primary's zone)",
                "zone": zone}

    def slow_zone(self, ms: float = 200.0, jitter_ms: float = 20.0) -> dict[str, str]:
        lab, zone = self.lab(), self._other_zone()
        lab.delay(zone, ms, jitter_ms)
        self.undos.append(lambda: lab.heal(zone))
        return {"action": f"latency +{ms:g} ms ±{jitter_ms:g} ms", "target": zone, "zone": zone}

    def lossy_zone(self, percent: float = 10.0) -> dict[str, str]:
        lab, zone = self.lab(), self._other_zone()
        lab.loss(zone, percent)
        self.undos.append(lambda: lab.heal(zone))
        return {"action": f"packet loss {percent:g} %", "target": zone, "zone": zone}

    def flap_primary_zone(self, period_s: float = 8.0, down_s: float = 2.0) -> dict[str, str]:
        lab, zone = self.lab(), str(self.leader().zone)
        flapper = lab.flap(zone, period_s=period_s, down_s=down_s)

        def stop() -> None:
            flapper.stop()
            lab.heal(zone)

        self.undos.append(stop)
        return {"action": f"link flap ({down_s:g} s cut every {period_s:g} s)",
                "target": f"{zone} (primary's zone)", "zone": zone}

    # -- providers ----------------------------------------------------------------------------

    def provider_fault(self, name: str, label: str, **faults: Any) -> dict[str, str]:
        """Set ``faults`` on simulator ``name``; ``primary`` names the deployment's first
        provider whatever it is called (it also serves the tool API and the embeddings)."""
        sims = self.state.simulators
        if name not in sims and name == "primary" and sims:
            name = next(iter(sims))
        url = sims[name].url
        headers = admin_headers(self.sd.secrets()["sim_admin_token"])
        resp = httpx.post(f"{url}/_faults", json=faults, timeout=5, headers=headers)
        resp.raise_for_status()
        self.undos.append(lambda: _clear_faults(url, headers))
        return {"action": label, "target": f"{name} {faults}"}

    def undo(self) -> None:
        """Undo every registered fault (latest first)."""
        while self.undos:
            with contextlib.suppress(Exception):
                self.undos.pop()()


def _pid_of(replica: ReplicaRecord) -> int:
    if not replica.pid:  # never 0: os.kill(0, ...) would signal our own process group
        raise RuntimeError(f"replica {replica.id} has no process")
    return replica.pid


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        _signal(pid, sig)


def _clear_faults(url: str, headers: dict[str, str]) -> None:
    httpx.delete(f"{url}/_faults", timeout=5, headers=headers).raise_for_status()
