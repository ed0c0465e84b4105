"""Base backups of the cluster (pg_basebackup of the leader, WAL streamed alongside) and
restoring one into a fresh, single PostgreSQL server — so RPO/RTO can be measured."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

from langchain_ha._proc import free_port
from langchain_ha.cluster.pgbin import LocalPostgres, prepare_dir, run_tool
from langchain_ha.cluster.postgres import PostgresCluster


def backup(cluster: PostgresCluster, dest: Path) -> dict[str, object]:
    """Take a base backup of the current leader into ``dest`` (a new directory)."""
    leader = cluster.leader()
    if leader is None:
        raise RuntimeError("no leader to back up")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    data = prepare_dir(dest) / "data"
    began = time.monotonic()
    result = run_tool(
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(leader["port"]), "-U", "replicator",
        "-D", str(data), "-X", "stream", "-c", "fast", "--no-password",
        env={"PGPASSWORD": cluster.spec.secrets["replication"]}, timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed: {result.stderr.strip()[-600:]}")
    meta: dict[str, object] = {"member": leader["name"], "timeline": leader.get("timeline"),
                               "taken_at": time.time(),
                               "seconds": round(time.monotonic() - began, 2)}
    (dest / "backup.json").write_text(json.dumps(meta))
    return meta


def restore(source: Path, target: Path, password: str, port: int | None = None, *,
            archive: Path | None = None, target_time: str | None = None) -> LocalPostgres:
    """Start a fresh server from the base backup in ``source`` (copied to ``target``).

    With ``archive`` (the cluster's WAL archive) it replays archived WAL after the backup:
    up to ``target_time`` (point-in-time recovery; e.g. ``2026-11-25 23:40:00+00``), or to
    the end of the archive.  The restored server never archives into that archive itself.
    """
    data = source / "data"
    if not (data / "PG_VERSION").exists():
        raise ValueError(f"{source} holds no base backup (no data/PG_VERSION)")
    if target_time is not None and archive is None:
        raise ValueError("a target time needs the WAL archive to replay")
    stamp = _timestamp(target_time) if target_time is not None else None
    restored = prepare_dir(target) / "data"
    shutil.copytree(data, restored, symlinks=True)
    prepare_dir(restored)  # owner and 0700 for the copy
    for path in restored.rglob("*"):
        shutil.chown(path, *_owner(target))
    for leftover in ("standby.signal", "recovery.signal", "postmaster.pid"):
        (restored / leftover).unlink(missing_ok=True)
    settings = ["archive_mode = 'off'"]
    if archive is not None:
        settings += [f"restore_command = 'cp {archive}/%f %p'",
                     "recovery_target_timeline = 'latest'",
                     "recovery_target_action = 'promote'"]
        if stamp is not None:
            settings.append(f"recovery_target_time = '{stamp}'")
        (restored / "recovery.signal").touch()
        shutil.chown(restored / "recovery.signal", *_owner(target))
    with open(restored / "postgresql.auto.conf", "a") as conf:
        conf.write("\n# lcha db restore\n" + "\n".join(settings) + "\n")
    server = LocalPostgres(restored, port or free_port(), password=password)
    server.start(timeout=300)
    return server


def _timestamp(value: str) -> str:
    """``value`` checked as an ISO timestamp with a zone (it goes into a config file)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"target time {value!r}: use ISO 8601, e.g. 2026-11-25T23:40:00+00:00"
                         ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"target time {value!r}: give its time zone (e.g. +00:00)")
    return parsed.isoformat(sep=" ")


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
