"""The HA data tier under real faults: node loss, Patroni death, postgres death, switchover.

A writer inserts a row every ~20 ms through the writer pool (each insert acknowledged = its
autocommit returned); a reader reads through the reader pool.  After each fault every
acknowledged row must be on the new primary, and at no moment may two members be writable.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from langchain_ha.cluster.postgres import PostgresCluster
from langchain_ha.store._db import on_reader
from langchain_ha.store.connect import Database

pytestmark = pytest.mark.slow


@dataclass
class Load:
    acked: list[int] = field(default_factory=list)
    write_errors: int = 0
    read_errors: int = 0
    longest_gap_s: float = 0.0
    reads: int = 0
    read_retries: int = 0
    read_failures: Counter[str] = field(default_factory=Counter)


async def _load_during(cluster: PostgresCluster, fault: Callable[[], None], table: str,
                       settle_s: float) -> Load:
    load = Load()
    async with Database.from_conninfo(cluster.writer_conninfo, cluster.reader_conninfo,
                                      statement_timeout_ms=3000, pool_timeout_s=2) as db:
        async with db.writer() as conn:
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY)")
        stop = asyncio.Event()

        async def writer() -> None:
            next_id, last_ok = 0, time.monotonic()
            while not stop.is_set():
                try:
                    async with db.writer() as conn:
                        await conn.execute(f"INSERT INTO {table} VALUES (%s)", (next_id,))
                    load.acked.append(next_id)
                    now = time.monotonic()
                    load.longest_gap_s = max(load.longest_gap_s, now - last_ok)
                    last_ok = now
                    await asyncio.sleep(0.02)
                except (psycopg.Error, OSError, TimeoutError, Exception):
                    load.write_errors += 1
                    await asyncio.sleep(0.05)
                next_id += 1

        async def count(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f"SELECT count(*) FROM {table}")

        async def reader() -> None:
            # A read retried on fresh connections (standby, then primary) for up to 3 s is slow,
            # not failed; one still failing after that counts as a read error.
            while not stop.is_set():
                for attempt in range(30):
                    try:
                        await on_reader(db, count)
                        load.reads += 1
                        load.read_retries += attempt
                        break
                    except Exception as exc:
                        load.read_failures[type(exc).__name__] += 1
                        if attempt == 29:
                            load.read_errors += 1
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
        # The baseline: writes and reads both flowing before the fault (a standby that has not
        # yet replayed the CREATE TABLE makes the first reads fail).
        began = time.monotonic()
        while (load.reads < 5 or len(load.acked) < 5) and time.monotonic() - began < 15:
            await asyncio.sleep(0.1)
        assert load.reads >= 5 and len(load.acked) >= 5, f"no baseline before the fault: {load}"
        load.read_failures.clear()
        load.read_retries = 0
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fault)
        began = time.monotonic()
        while time.monotonic() - began < settle_s:
            acked_before = len(load.acked)
            await asyncio.sleep(1.0)
            if len(load.acked) > acked_before + 10 and time.monotonic() - began > 3:
                break
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        async with db.writer() as conn:
            rows = await (await conn.execute(f"SELECT id FROM {table}")).fetchall()
        present = {r[0] for r in rows}
    lost = [i for i in load.acked if i not in present]
    assert lost == [], f"{len(lost)} acknowledged writes lost"
    return load


def _watch_writable(cluster: PostgresCluster, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(len(cluster.writable_members()))
        time.sleep(0.2)


def test_three_members_with_a_sync_standby(healthy_cluster: PostgresCluster) -> None:
    roles = sorted(m["role"] for m in healthy_cluster.members())
    assert roles == ["leader", "replica", "sync_standby"]
    assert len(healthy_cluster.writable_members()) == 1


async def test_switchover_loses_nothing(healthy_cluster: PostgresCluster) -> None:
    old = healthy_cluster.leader()
    load = await _load_during(healthy_cluster, healthy_cluster.switchover, "t_switch", 20)
    new = healthy_cluster.leader()
    assert old and new and old["name"] != new["name"]
    print(f"\nswitchover: write gap {load.longest_gap_s:.2f}s, {len(load.acked)} acked, "
          f"read errors {load.read_errors}, read retries {load.read_retries}, "
          f"reads {load.reads}, failures {dict(load.read_failures)}")
    assert load.longest_gap_s <= 5.0
    # Reads get 5 % slack: while roles swap, a read can still fail after 3 s of retries
    # (seen in 1 run of 5). The node-loss test holds reads to 0 errors.
    assert load.read_errors <= 0.05 * max(load.reads, 1)


@pytest.mark.parametrize("process", ["patroni", "postgres"])
async def test_one_process_death_never_gives_two_primaries(
    healthy_cluster: PostgresCluster, process: str
) -> None:
    leader = healthy_cluster.leader()
    assert leader is not None
    zone = healthy_cluster.zone_of(leader["name"])
    kill = {"patroni": healthy_cluster.kill_patroni, "postgres": healthy_cluster.kill_postgres}
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch_writable, args=(healthy_cluster, stop, seen))
    watcher.start()
    try:
        load = await _load_during(healthy_cluster, lambda: kill[process](zone),
                                  f"t_{process}", 40)
    finally:
        stop.set()
        watcher.join()
    print(f"\n{process} SIGKILL: write gap {load.longest_gap_s:.2f}s, max writable {max(seen)}")
    assert max(seen) <= 1
    healthy_cluster.wait_healthy(120)


async def test_node_loss_fails_over_within_ttl(healthy_cluster: PostgresCluster) -> None:
    leader = healthy_cluster.leader()
    assert leader is not None
    zone = healthy_cluster.zone_of(leader["name"])
    load = await _load_during(healthy_cluster, lambda: healthy_cluster.kill_member(zone),
                              "t_node", 45)
    new = healthy_cluster.leader()
    assert new is not None and new["name"] != leader["name"]
    print(f"\nnode loss: write gap {load.longest_gap_s:.2f}s, {len(load.acked)} acked, "
          f"read errors {load.read_errors} of {load.reads} reads ({load.read_retries} retries)")
    assert load.longest_gap_s <= 25.0
    assert load.read_errors == 0
    healthy_cluster.start_member(zone)  # the node comes back and rejoins
    healthy_cluster.wait_healthy(120)


async def test_a_frozen_primary_is_failed_over_like_a_lost_node(
        healthy_cluster: PostgresCluster) -> None:
    # SIGSTOP of the primary's postgres for 40 s: before the guardian's freeze watch the
    # cluster waited it out (a 40 s write gap); now the guardian kills the silent postgres and
    # Patroni hands the leader key to the sync standby.
    leader = healthy_cluster.leader()
    assert leader is not None
    zone = healthy_cluster.zone_of(leader["name"])
    frozen: list[int] = []
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch_writable, args=(healthy_cluster, stop, seen))
    thaw = threading.Timer(40, healthy_cluster.thaw, args=(frozen,))

    def freeze() -> None:
        frozen.extend(healthy_cluster.freeze_postgres(zone))
        thaw.start()

    watcher.start()
    try:
        load = await _load_during(healthy_cluster, freeze, "t_freeze", 40)
    finally:
        stop.set()
        watcher.join()
        thaw.cancel()
        healthy_cluster.thaw(frozen)
    new = healthy_cluster.leader()
    print(f"\nprimary freeze: write gap {load.longest_gap_s:.2f}s, {len(load.acked)} acked, "
          f"max writable {max(seen)}")
    assert len(frozen) > 3  # the postmaster and its backends
    assert new is not None and new["name"] != leader["name"]
    assert load.longest_gap_s <= 25.0
    assert max(seen) <= 1
    healthy_cluster.wait_healthy(120)  # the old primary rejoins as a replica, untouched by hand


def test_db_cli_rejects_a_missing_state_dir(tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "langchain_ha.cli", "db", "--state-dir",
                             str(tmp_path / "none"), "status"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and "no cluster state" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_status_json_reports_members_and_conninfo(healthy_cluster: PostgresCluster) -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "langchain_ha.cli", "db", "--state-dir",
                             str(healthy_cluster.base), "status", "--json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(m["role"] for m in data["members"]) == ["leader", "replica", "sync_standby"]
    # No password in the conninfo at all: it names the cluster's 0600 passfile.
    assert "password" not in result.stdout
    assert f"passfile={healthy_cluster.passfile}" in data["writer"]
    assert "target_session_attrs=read-write" in data["writer"]
    assert all("timeline" in m and "lag" in m for m in data["members"])


def test_backup_restores_every_row_committed_before_it(healthy_cluster: PostgresCluster,
                                                       tmp_path) -> None:
    from langchain_ha.cluster.backup import backup, restore
    from langchain_ha.cluster.pgbin import prepare_dir

    with psycopg.connect(healthy_cluster.writer_conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t_backup (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t_backup SELECT generate_series(1, 500)")
    began = time.monotonic()
    meta = backup(healthy_cluster, prepare_dir(tmp_path / "bk"))
    with psycopg.connect(healthy_cluster.writer_conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO t_backup VALUES (501)")  # after the backup: not in it
    server = restore(tmp_path / "bk", tmp_path / "restored", healthy_cluster.spec.secrets[
        "superuser"])
    try:
        rto = time.monotonic() - began
        with psycopg.connect(server.conninfo) as conn:
            row = conn.execute("SELECT count(*), max(id) FROM t_backup").fetchone()
        assert row == (500, 500)
        print(f"\nbackup {meta['seconds']}s; backup + restore to a serving node {rto:.1f}s")
    finally:
        server.stop()


def test_apps_get_their_own_role_and_database(healthy_cluster: PostgresCluster) -> None:
    """Applications log in as ``lcha_app`` (not a superuser) to database ``lcha``, which has
    pgvector and which they own (they create their tables)."""
    with psycopg.connect(healthy_cluster.app_writer_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT current_user, current_database(), rolsuper FROM pg_roles "
                           "WHERE rolname = current_user").fetchone()
        assert row == ("lcha_app", "lcha", False)
        conn.execute("CREATE TABLE IF NOT EXISTS app_owned (v vector(3))")
        conn.execute("INSERT INTO app_owned VALUES ('[1,2,3]')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE intruder SUPERUSER")
    assert "password" not in healthy_cluster.app_reader_conninfo  # from the passfile
    assert "prefer-standby" in healthy_cluster.app_reader_conninfo


def test_point_in_time_recovery_from_the_wal_archive(healthy_cluster: PostgresCluster,
                                                     tmp_path) -> None:
    """A base backup plus the continuously archived WAL restores to a chosen moment: rows
    committed before it are there, rows committed after it are not; without a target, every
    archived row comes back."""
    import datetime as dt

    from langchain_ha.cluster.backup import backup, restore
    from langchain_ha.cluster.patroni_config import archive_dir
    from langchain_ha.cluster.pgbin import prepare_dir

    def write(rows: str) -> None:
        with psycopg.connect(healthy_cluster.writer_conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t_pitr (id int PRIMARY KEY)")
            conn.execute(f"INSERT INTO t_pitr SELECT generate_series({rows})")

    write("1, 100")
    backup(healthy_cluster, prepare_dir(tmp_path / "bk"))
    write("101, 200")  # after the backup, before the target: from the archive
    time.sleep(1.0)
    target = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.0)
    write("201, 300")  # after the target
    with psycopg.connect(healthy_cluster.writer_conninfo, autocommit=True) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    archived = archive_dir(healthy_cluster.base) / str(segment[0] if segment else "")
    deadline = time.monotonic() + 60
    while not archived.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert archived.exists(), "the segment holding the last rows was archived"
    secret = healthy_cluster.spec.secrets["superuser"]
    archive = archive_dir(healthy_cluster.base)
    for name, target_time, expected in (("at", target, (200, 200)), ("end", None, (300, 300))):
        began = time.monotonic()
        server = restore(tmp_path / "bk", tmp_path / f"restored-{name}", secret,
                         archive=archive, target_time=target_time)
        try:
            with psycopg.connect(server.conninfo) as conn:
                assert conn.execute("SELECT count(*), max(id) FROM t_pitr").fetchone() == expected
            print(f"\nrestore to {name}: serving after {time.monotonic() - began:.1f}s")
        finally:
            server.stop()
    with pytest.raises(ValueError, match="time zone"):
        restore(tmp_path / "bk", tmp_path / "never", secret, archive=archive,
                target_time="2026-11-25 10:00")
