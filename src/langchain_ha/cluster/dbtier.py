"""The database tier as the supervisor runs it: start or adopt the Patroni members, heal them.

A member whose guardian is gone (its node lost) is restarted only after ``HEAL_AFTER_S``: long
enough for Patroni to fail over first (leader TTL 20 s), so the old primary comes back as a
replica (pg_rewind) instead of racing for its old role.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from langchain_ha.cluster.patroni_config import ClusterSpec, member_name
from langchain_ha.cluster.placement import Placement
from langchain_ha.cluster.postgres import PostgresCluster
from langchain_ha.cluster.state import DatabaseRecord, MemberRecord
from langchain_ha.cluster.topology import Topology

HEAL_AFTER_S = 30.0
MEMBERS_TTL_S = 3.0


class DbTier:
    """One PostgreSQL member per zone under Patroni, in ``base_dir``."""

    def __init__(self, topology: Topology, base_dir: Path,
                 placement: Placement | None = None) -> None:
        self.enabled = topology.database.enabled
        where = placement or Placement()
        self.cluster = PostgresCluster(ClusterSpec(
            base_dir=base_dir, name=topology.name, zones=tuple(topology.zones),
            replication=topology.database.replication,
            etcd_hosts=tuple(topology.database.etcd_endpoints)
            if topology.database.dcs == "etcd" else (),
            hosts={z: where.host(z) for z in where.hosts},
            clients=(where.hub,) if where.lab else (),
            enter=dict(where.enter)))
        self._gone_since: dict[str, float] = {}
        self._members: list[dict[str, Any]] = []
        self._members_at = 0.0

    def describe(self) -> str:
        spec = self.cluster.spec
        dcs = f"etcd {','.join(spec.etcd_hosts)}" if spec.etcd_hosts else "raft"
        return (f"{len(spec.zones)} PostgreSQL members under Patroni ({dcs} DCS), "
                f"{spec.replication} replication")

    def ensure_running(self) -> str:
        """Adopt running members (restarting any that are gone) or start the cluster."""
        running = [z for z in self.cluster.spec.zones if self.cluster.guardian_pid(z)]
        if running:
            self.cluster.write_secrets()
            for zone in self.cluster.spec.zones:
                if zone not in running:
                    self.cluster.start_member(zone)
            self.cluster.wait_healthy(timeout=120)
        else:
            self.cluster.start()
        members = self.refresh()
        leader = next((m for m in members if m.get("role") == "leader"), None)
        return f"leader {leader['name'] if leader else '?'}, {len(members)} members running"

    @property
    def writer(self) -> str:
        """The application's writer conninfo (role lcha_app, database lcha); it names the
        passfile, holds no password."""
        return self.cluster.app_writer_conninfo

    @property
    def reader(self) -> str:
        return self.cluster.app_reader_conninfo

    @property
    def app_password(self) -> str:
        """What replicas get as ``PGPASSWORD`` (they cannot read the passfile)."""
        return self.cluster.app_password

    def heal(self) -> str | None:
        """Restart one member gone for longer than HEAL_AFTER_S; a sentence if it did."""
        if not self.enabled:
            return None
        now = time.monotonic()
        for zone in self.cluster.spec.zones:
            if self.cluster.guardian_pid(zone):
                self._gone_since.pop(zone, None)
                continue
            if self.cluster.patroni_pid(zone):
                # Its guardian died but Patroni runs on, unguarded: if Patroni died next, its
                # postgres would stay up as a primary.  Stop it cleanly and restart it guarded.
                self.cluster.stop_member(zone)
                self.cluster.start_member(zone)
                return (f"database member {member_name(zone)} lost its guardian: stopped it "
                        "cleanly (a leader hands over) and restarted it under a new guardian")
            since = self._gone_since.setdefault(zone, now)
            if now - since >= HEAL_AFTER_S:
                self._gone_since.pop(zone)
                self.cluster.start_member(zone)
                return (f"database member {member_name(zone)} was gone for "
                        f"{now - since:.0f}s: restarted it (it rejoins as a replica)")
        return None

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the members (cached for a few seconds; may block on a member
        that does not answer: the supervisor calls :meth:`refresh` off its loop instead)."""
        if not self.enabled:
            return []
        if time.monotonic() - self._members_at > MEMBERS_TTL_S:
            self.refresh()
        return self._members

    def refresh(self) -> list[dict[str, Any]]:
        """Ask Patroni for its members now (blocking) and keep the answer."""
        self._members_at = time.monotonic()
        try:
            self._members = self.cluster.members()
        except httpx.HTTPError:
            self._members = []
        return self._members

    @property
    def stale(self) -> bool:
        """The kept view of the members is older than its few seconds."""
        return self.enabled and time.monotonic() - self._members_at > MEMBERS_TTL_S

    def record(self) -> DatabaseRecord:
        """Its entry in the state file: the members as Patroni last said (no request made
        here), with their PIDs."""
        if not self.enabled:
            return DatabaseRecord(enabled=False)
        return DatabaseRecord(
            enabled=True, dir=str(self.cluster.base), writer=self.writer, reader=self.reader,
            members=[MemberRecord(name=m.get("name"), role=m.get("role"), state=m.get("state"),
                                  zone=m.get("zone"), lag=m.get("lag"),
                                  timeline=m.get("timeline"), host=m.get("host"),
                                  port=m.get("port"),
                                  **self._pids(str(m.get("zone"))))
                     for m in self._members])

    def _pids(self, zone: str) -> dict[str, int | None]:
        if zone not in self.cluster.spec.zones:
            return {}
        return {"guardian_pid": self.cluster.guardian_pid(zone),
                "patroni_pid": self.cluster.patroni_pid(zone),
                "postgres_pid": self.cluster.postgres_pid(zone)}

    def stop(self) -> None:
        if self.enabled:
            self.cluster.stop()
