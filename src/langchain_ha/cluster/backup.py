"""Base backups of the cluster (pg_basebackup of the leader, WAL streamed alongside) and
restoring one into a fresh, single PostgreSQL server — so RPO/RTO can be measured.

A backup is written by the cluster's OS user, so root treats its content as untrusted when it
restores one: the copy is made in a directory only root can enter, symlinks are copied as
symlinks and never followed (not by the copy, not by the chown, not by the files we write),
and only then is the tree handed to the OS user.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from datetime import datetime
from pathlib import Path

from langchain_ha._files import private_dir, write_private
from langchain_ha._proc import free_port
from langchain_ha.cluster.pgbin import LocalPostgres, owner, prepare_dir, run_tool
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
        "pg_basebackup", "-h", str(leader.get("host") or "127.0.0.1"), "-p", str(leader["port"]),
        "-U", "replicator",
        "-D", str(data), "-X", "stream", "-c", "fast", "--no-password",
        env={"PGPASSWORD": cluster.spec.secrets["replication"]}, timeout=600, reach=[dest],
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed: {result.stderr.strip()[-600:]}")
    meta: dict[str, object] = {"member": leader["name"], "timeline": leader.get("timeline"),
                               "taken_at": time.time(),
                               "seconds": round(time.monotonic() - began, 2)}
    write_private(dest / "backup.json", json.dumps(meta))  # never through a planted symlink
    return meta


def restore(source: Path, target: Path, password: str, port: int | None = None, *,
            archive: Path | None = None, target_time: str | None = None) -> LocalPostgres:
    """Start a fresh server from the base backup in ``source`` (copied to ``target``).

    With ``archive`` (the cluster's WAL archive) it replays archived WAL after the backup:
    up to ``target_time`` (point-in-time recovery; e.g. ``2026-11-25 23:40:00+00``), or to
    the end of the archive.  The restored server never archives into that archive itself.
    """
    data = source / "data"
    if data.is_symlink() or not (data / "PG_VERSION").exists():
        raise ValueError(f"{source} holds no base backup (no data/PG_VERSION)")
    if target_time is not None and archive is None:
        raise ValueError("a target time needs the WAL archive to replay")
    stamp = _timestamp(target_time) if target_time is not None else None
    # Root's alone while the copy is made and configured: the OS user gets it at the end.
    staging = private_dir(target, owner=(os.getuid(), os.getgid()))
    restored = staging / "data"
    shutil.copytree(data, restored, symlinks=True)
    for leftover in ("standby.signal", "recovery.signal", "postmaster.pid"):
        (restored / leftover).unlink(missing_ok=True)
    # The copy's own access rules, not the member's files (which the copy cannot reach).
    settings = ["archive_mode = 'off'",
                f"hba_file = {_conf_string(str(restored / 'pg_hba.conf'))}",
                f"ident_file = {_conf_string(str(restored / 'pg_ident.conf'))}"]
    if archive is not None:
        settings += [f"restore_command = {_conf_string(restore_command(archive))}",
                     "recovery_target_timeline = 'latest'",
                     "recovery_target_action = 'promote'"]
        if stamp is not None:
            settings.append(f"recovery_target_time = {_conf_string(stamp)}")
        _append(restored / "recovery.signal", "")
    _append(restored / "postgresql.auto.conf", "\n# lcha db restore\n" + "\n".join(settings)
            + "\n")
    who = owner()
    if who is not None:
        chown_tree(restored, *who)
        os.chown(staging, *who)
    os.chmod(restored, 0o700)
    server = LocalPostgres(restored, port or free_port(), password=password,
                           reach=[archive] if archive is not None else [])
    server.start(timeout=300)
    return server


def restore_command(archive: Path) -> str:
    """The shell command that fetches one archived WAL segment (the path quoted)."""
    return f"cp {shlex.quote(str(archive))}/%f %p"


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything under it to ``uid``/``gid`` without following a symlink:
    a link is chowned itself, and never descended into."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), refusing a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _conf_string(value: str) -> str:
    """``value`` as a quoted postgresql.conf string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


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
