"""Patroni configuration for one member of the embedded cluster (raft DCS on loopback by
default, or external etcd members).  In a lab (``lcha up --lab``) each member listens on its
zone's address instead, so that replication, the raft DCS and clients cross the lab's network.

Who can do what (see SECURITY.md): PostgreSQL takes a login without a password only on its
socket, which sits in a 0700 directory of the cluster's OS user with mode 0700, and only for
that OS user (``peer``, mapped to ``postgres``); every TCP login is scram-sha-256.  Patroni's
REST API asks for basic auth (``restapi`` secret) on everything that changes the cluster; its
raft traffic is encrypted with the ``raft`` secret; etcd is used with a user and password when
the cluster's secrets name them.
"""

from __future__ import annotations

import getpass
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LOOPBACK = "127.0.0.1"

Replication = Literal["async", "sync", "strict"]


@dataclass(frozen=True)
class MemberPorts:
    """The ports one member listens on (on its host: loopback, or its lab zone's address)."""

    postgres: int
    rest: int
    raft: int


@dataclass(frozen=True)
class ClusterSpec:
    """The data tier's shape: members (one per zone), replication mode and Patroni timings."""

    base_dir: Path
    name: str = "lcha"
    zones: tuple[str, ...] = ("az1", "az2", "az3")
    replication: Replication = "sync"
    ttl: int = 20
    loop_wait: int = 1
    retry_timeout: int = 3
    freeze_after_s: float = 6.0
    """A member's postgres or Patroni silent this long is killed by its guardian (0: never);
    see :mod:`langchain_ha.cluster.guardian`."""
    etcd_hosts: tuple[str, ...] = ()
    """etcd members (host:port) to use as the DCS; empty: Patroni's raft inside the members."""
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    hosts: Mapping[str, str] = field(default_factory=dict)
    """Each zone's member address (a lab zone's); a zone not named listens on loopback."""
    clients: tuple[str, ...] = ()
    """Addresses besides loopback and the members' own that may log in over TCP (a lab's hub:
    the supervisor, the drills)."""
    enter: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per zone, the command that starts a program in that zone's network namespace."""

    def host(self, zone: str) -> str:
        """Where ``zone``'s member listens."""
        return self.hosts.get(zone, LOOPBACK)

    def __post_init__(self) -> None:
        if self.ttl < 20 or self.loop_wait < 1 or self.retry_timeout < 3:
            raise ValueError("ttl must be >= 20, loop_wait >= 1, retry_timeout >= 3")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError("loop_wait + 2 * retry_timeout must be <= ttl")
        if len(self.zones) < 1:
            raise ValueError("zones: at least one member is needed")


REST_USER = "patroni"
SECRET_KEYS = ("superuser", "replication", "rewind", "app", "restapi", "raft")
"""The secrets every cluster has (``secrets.json``); ``etcd_username``/``etcd_password`` are
optional (an etcd with authentication enabled)."""


def _dcs(spec: ClusterSpec, data: Path, host: str, me: MemberPorts,
         peers: list[str]) -> dict[str, Any]:
    s = spec.secrets
    if spec.etcd_hosts:
        etcd: dict[str, Any] = {"hosts": list(spec.etcd_hosts)}
        if s.get("etcd_username") and s.get("etcd_password"):
            etcd.update(username=s["etcd_username"], password=s["etcd_password"])
        return {"etcd3": etcd}
    return {"raft": {"data_dir": str(data / "raft"), "self_addr": f"{host}:{me.raft}",
                     "bind_addr": f"{host}:{me.raft}", "partner_addrs": peers,
                     "password": s["raft"]}}


def archive_dir(base_dir: Path) -> Path:
    """Where the cluster's WAL archive lives (shared by the members on this machine)."""
    return Path(base_dir) / "wal_archive"


def archive_command(base_dir: Path) -> str:
    # Never overwrite a segment already archived (another timeline's copy wins nothing).
    target = shlex.quote(str(archive_dir(base_dir)))
    return f"test ! -f {target}/%f && cp %p {target}/%f.tmp && mv {target}/%f.tmp {target}/%f"


def member_name(zone: str) -> str:
    return f"pg-{zone}"


def socket_dir(base_dir: Path, zone: str) -> Path:
    """The member's socket directory (0700, the cluster's OS user's)."""
    return Path(base_dir) / member_name(zone) / "run"


def pg_hba(os_user: str | None = None, addresses: tuple[str, ...] = (LOOPBACK,)
           ) -> tuple[list[str], list[str]]:
    """(pg_hba lines, pg_ident lines): the socket for the cluster's OS user alone (as
    ``postgres``), scram-sha-256 for every TCP login from ``addresses``."""
    who = os_user or getpass.getuser()
    tcp = [line for a in dict.fromkeys(addresses)
           for line in (f"host all all {a}/32 scram-sha-256",
                        f"host replication replicator {a}/32 scram-sha-256")]
    return ([
        "local all postgres peer map=lcha",
        "local all all reject",
        *tcp,
    ], [f"lcha {who} postgres"])


def patroni_config(spec: ClusterSpec, zone: str, ports: dict[str, MemberPorts],
                   bin_dir: Path, os_user: str | None = None) -> dict[str, Any]:
    """The Patroni YAML (as a dict) for the member in ``zone``; ``os_user``: who runs it
    (None: the current user)."""
    me = ports[zone]
    host = spec.host(zone)
    data = spec.base_dir / member_name(zone)
    peers = [f"{spec.host(z)}:{p.raft}" for z, p in ports.items() if z != zone]
    s = spec.secrets
    sync = spec.replication != "async"
    hba, ident = pg_hba(os_user, (LOOPBACK, *spec.clients,
                                  *(spec.host(z) for z in spec.zones)))
    return {
        "scope": spec.name,
        "name": member_name(zone),
        "log": {"level": "WARNING", "dir": str(data / "log"), "mode": 0o600},
        "restapi": {"listen": f"{host}:{me.rest}", "connect_address": f"{host}:{me.rest}",
                    "authentication": {"username": REST_USER, "password": s["restapi"]}},
        **_dcs(spec, data, host, me, peers),
        "bootstrap": {
            "dcs": {
                "ttl": spec.ttl, "loop_wait": spec.loop_wait,
                "retry_timeout": spec.retry_timeout,
                "maximum_lag_on_failover": 1048576,
                # A crashed (or frozen, then killed) primary hands over to its synchronous
                # standby at once instead of restarting in place for up to 300 s: with
                # synchronous replication the standby has every acknowledged commit.
                "primary_start_timeout": 0,
                "synchronous_mode": sync,
                "synchronous_mode_strict": spec.replication == "strict",
                "postgresql": {
                    "use_pg_rewind": True,
                    "remove_data_directory_on_rewind_failure": True,
                    "parameters": {"wal_level": "replica", "hot_standby": "on",
                                   "max_wal_senders": 10, "max_replication_slots": 10,
                                   "wal_log_hints": "on", "max_connections": 200,
                                   "shared_buffers": "64MB", "wal_keep_size": "256MB",
                                   # Continuous archiving (point-in-time recovery): every
                                   # primary copies each finished WAL segment to the archive;
                                   # archive_timeout bounds the RPO of a whole-cluster loss.
                                   "archive_mode": "on",
                                   "archive_command": archive_command(spec.base_dir),
                                   "archive_timeout": 60},
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{host}:{me.postgres}",
            "connect_address": f"{host}:{me.postgres}",
            "data_dir": str(data / "data"),
            "bin_dir": str(bin_dir),
            "pgpass": str(data / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": s["superuser"]},
                "replication": {"username": "replicator", "password": s["replication"]},
                "rewind": {"username": "rewinder", "password": s["rewind"]},
            },
            "parameters": {"unix_socket_directories": str(socket_dir(spec.base_dir, zone)),
                           "unix_socket_permissions": "0700"},
            "pg_hba": hba,
            "pg_ident": ident,
        },
        "tags": {"zone": zone, "nofailover": False, "noloadbalance": False},
    }
