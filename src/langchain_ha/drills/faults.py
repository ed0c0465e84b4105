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

from langchain_ha.cluster.guardian import signal_postgres_tree
from langchain_ha.cluster.patroni_config import member_name
from langchain_ha.cluster.postgres import rest_credentials
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
        rest = _rest_port(self.sd, str(leader.zone))
        body = {"leader": leader.name, **({"candidate": candidate.name} if candidate else {})}
        resp = httpx.post(f"http://127.0.0.1:{rest}/switchover", json=body, timeout=30,
                          auth=rest_credentials(self.sd.db_dir))
        resp.raise_for_status()
        return {"action": "patroni switchover", "target": f"{leader.name} -> "
                f"{candidate.name if candidate else 'any'}"}

    def rollout(self) -> dict[str, str]:
        seq = self.sd.request("rollout", canary=None, hold_s=0, app=None)
        return {"action": "rolling deploy", "target": f"request {seq}"}

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


def _rest_port(sd: StateDir, zone: str) -> int:
    from langchain_ha.cluster.state import read_json

    ports = read_json(sd.db_dir / "state.json")["ports"]
    return int(ports[zone]["rest"])
