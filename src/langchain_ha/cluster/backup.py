"""Base backups of the cluster (pg_basebackup of the leader, WAL streamed alongside) and
restoring one into a fresh, single PostgreSQL server — so RPO/RTO can be measured."""

from __future__ import annotations

import json
import shutil
import time
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


def restore(source: Path, target: Path, password: str, port: int | None = None) -> LocalPostgres:
    """Start a fresh server from the backup in ``source`` (its data copied to ``target``)."""
    data = source / "data"
    if not (data / "PG_VERSION").exists():
        raise ValueError(f"{source} holds no base backup (no data/PG_VERSION)")
    restored = prepare_dir(target) / "data"
    shutil.copytree(data, restored, symlinks=True)
    prepare_dir(restored)  # owner and 0700 for the copy
    for path in restored.rglob("*"):
        shutil.chown(path, *_owner(target))
    for leftover in ("standby.signal", "recovery.signal", "postmaster.pid"):
        (restored / leftover).unlink(missing_ok=True)
    server = LocalPostgres(restored, port or free_port(), password=password)
    server.start()
    return server


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
