"""``lcha db up|down|status|switchover``: the data tier alone, from a state directory."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from langchain_ha._redact import redact
from langchain_ha._usage import UsageError
from langchain_ha.cluster.patroni_config import ClusterSpec, Replication, archive_dir
from langchain_ha.cluster.postgres import PostgresCluster, load_secrets


def cluster_at(state_dir: Path, replication: Replication = "sync",
               etcd_hosts: tuple[str, ...] = ()) -> PostgresCluster:
    """The Patroni cluster whose state directory is ``state_dir`` (its members' zones and
    DCS from the ``state.json`` there, when it was created already)."""
    state = state_dir / "state.json"
    spec = ClusterSpec(base_dir=state_dir, replication=replication, etcd_hosts=etcd_hosts)
    if state.exists():
        saved = json.loads(state.read_text())
        spec = replace(spec, zones=tuple(saved["ports"]),
                       etcd_hosts=tuple(saved.get("etcd_hosts", etcd_hosts)))
    return PostgresCluster(spec)


def _running_cluster(state_dir: Path) -> tuple[PostgresCluster, list[dict[str, Any]]]:
    """The cluster in ``state_dir`` and its members, or a UsageError saying what is wrong."""
    if not (state_dir / "state.json").exists():
        raise UsageError(f"--state-dir {state_dir}: no cluster state here (lcha db up first)")
    cluster = cluster_at(state_dir)
    try:
        return cluster, cluster.members()
    except Exception as exc:
        raise UsageError(f"--state-dir {state_dir}: no member answers ({type(exc).__name__}); "
                         "is the cluster up?") from None


def _shown(cluster: PostgresCluster, conninfo: str, show: bool) -> str:
    """``conninfo`` as printed: it names the passfile; ``--show-secrets`` adds the password."""
    if show:
        return make_conninfo(conninfo, password=cluster.spec.secrets["superuser"])
    return redact(conninfo)


def up(state_dir: Path, replication: Replication, show_secrets: bool,
       etcd: str | None = None) -> int:
    if (state_dir / "state.json").exists() and _running(state_dir):
        raise UsageError(f"--state-dir {state_dir}: a cluster is already running there "
                         "(lcha db status, or lcha db down first)")
    hosts = tuple(h.strip() for h in (etcd or "").split(",") if h.strip())
    if any(not re.fullmatch(r"[\w.-]+:\d{1,5}", h) for h in hosts):
        raise UsageError("--etcd: a comma-separated list of host:port (the etcd members)")
    cluster = cluster_at(state_dir, replication, hosts)
    print(f"starting {len(cluster.spec.zones)} PostgreSQL members in {state_dir} ...", flush=True)
    cluster.start()
    print(member_table(cluster.members()))
    print(f"writer: {_shown(cluster, cluster.writer_conninfo, show_secrets)}")
    print(f"reader: {_shown(cluster, cluster.reader_conninfo, show_secrets)}")
    return 0


def down(state_dir: Path) -> int:
    if not (state_dir / "state.json").exists():
        raise UsageError(f"--state-dir {state_dir}: no cluster state here")
    cluster_at(state_dir).stop()
    print("all members stopped")
    return 0


def status(state_dir: Path, as_json: bool, show_secrets: bool) -> int:
    cluster, members = _running_cluster(state_dir)
    if as_json:
        print(json.dumps({"members": members,
                          "writer": _shown(cluster, cluster.writer_conninfo, show_secrets),
                          "reader": _shown(cluster, cluster.reader_conninfo, show_secrets)},
                         indent=2))
    else:
        print(member_table(members))
        print(f"writer: {_shown(cluster, cluster.writer_conninfo, show_secrets)}")
        print(f"reader: {_shown(cluster, cluster.reader_conninfo, show_secrets)}")
    return 0


def switchover(state_dir: Path, candidate: str | None) -> int:
    cluster, _ = _running_cluster(state_dir)
    try:
        cluster.switchover(candidate)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    cluster.wait_healthy(60)
    print(member_table(cluster.members()))
    return 0


def _running(state_dir: Path) -> bool:
    try:
        cluster_at(state_dir).members()
        return True
    except Exception:
        return False


def member_table(members: list[dict[str, Any]]) -> str:
    """Patroni members as ``lcha db status`` and ``lcha status`` print them."""
    keys = ("name", "zone", "role", "state", "lag", "timeline", "port")
    rows = [("member", *keys[1:]), *(tuple(str(m.get(k, "")) for k in keys) for m in members)]
    return text_table(rows)


def text_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def backup_cmd(state_dir: Path, dest: Path) -> int:
    from langchain_ha.cluster.backup import backup

    cluster, _ = _running_cluster(state_dir)
    try:
        meta = backup(cluster, dest)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--to {dest}: {exc}") from None
    print(f"base backup of {meta['member']} (timeline {meta['timeline']}) in {dest}, "
          f"{meta['seconds']}s")
    return 0


def restore_cmd(state_dir: Path, source: Path, target: Path, port: int | None,
                target_time: str | None = None) -> int:
    """Serve the backup (plus the archived WAL, up to ``target_time``) from a fresh server in
    the foreground until SIGINT/SIGTERM."""
    import signal
    import threading

    from langchain_ha.cluster.backup import restore

    if not (state_dir / "secrets.json").exists():
        raise UsageError(f"--state-dir {state_dir}: the cluster's secrets.json is needed")
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"--to {target}: must be a new or empty directory")
    try:
        archive = archive_dir(state_dir)
        server = restore(source, target, load_secrets(state_dir)["superuser"], port,
                         archive=archive if archive.exists() else None, target_time=target_time)
    except ValueError as exc:
        field = "--target-time" if "target time" in str(exc) else "--from"
        raise UsageError(f"{field} {target_time if field == '--target-time' else source}: "
                         f"{exc}") from None
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"restored server: {redact(server.conninfo)} (pid {server.pid}); "
          "Ctrl-C stops it", flush=True)
    try:
        done.wait()
    finally:
        server.stop()
    return 0
