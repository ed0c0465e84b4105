"""The Patroni cluster against another local user: no login to PostgreSQL without a password,
no secret file readable, no control of Patroni (REST or raft) without credentials, children
that never see the parent's provider keys, and a restore that follows no planted symlink.

Uses the session's cluster (``healthy_cluster``); each probe runs as another OS user (see
``tests/support/stranger.py``) who is given a way to walk up to the files, so our own modes
and credentials are what stops them.  Rows refer to SECURITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from langchain_ha.cluster.patroni_config import member_name
from langchain_ha.cluster.postgres import PostgresCluster
from tests.support.fixtures_cluster import PARENT_ONLY_KEY, STARTED_WITH_CANARY
from tests.support.stranger import CONNECT, READ, as_stranger, run_as_os_user

# Names only: the tests use no API the fix added, so they run against older code too.
OS_USER = "lcha"


def _socket_dir(cluster: PostgresCluster, zone: str) -> Path:
    return cluster.base / member_name(zone) / "run"


def _secret(cluster: PostgresCluster, name: str) -> str:
    return str(json.loads((cluster.base / "secrets.json").read_text()).get(name, ""))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drops to other users)")]


def test_a_stranger_cannot_log_in_to_postgresql(healthy_cluster: PostgresCluster) -> None:
    """H1: not over a member's socket (even with the path up to its directory open to them),
    not over TCP without a password; over TCP with the password they can (the probe works).
    The socket takes its own OS user alone: not even root gets in without the password."""
    attempts: dict[str, str] = {}
    for zone in healthy_cluster.spec.zones:
        port = healthy_cluster.ports[zone].postgres
        for where in (_socket_dir(healthy_cluster, zone),
                      healthy_cluster.base / member_name(zone)):  # where the socket was
            attempts[f"socket {where}"] = f"host={where} port={port} user=postgres dbname=postgres"
        attempts[f"tcp {zone}"] = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        attempts[f"tcp app {zone}"] = f"host=127.0.0.1 port={port} user=lcha_app dbname=lcha"
    leader = healthy_cluster.leader()
    assert leader is not None
    attempts["control"] = (f"host=127.0.0.1 port={leader['port']} user=lcha_app dbname=lcha "
                           f"password={_secret(healthy_cluster, 'app')}")
    reach = [_socket_dir(healthy_cluster, z) for z in healthy_cluster.spec.zones]
    out = as_stranger(CONNECT.format(attempts=json.dumps(attempts)), reach=reach)
    assert out.pop("control") == "logged in as lcha_app"
    assert all(v.startswith("OperationalError") for v in out.values()), out
    for zone in healthy_cluster.spec.zones:
        run = _socket_dir(healthy_cluster, zone)
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        sock = next(p for p in run.iterdir() if stat.S_ISSOCK(p.stat().st_mode))
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        port = healthy_cluster.ports[zone].postgres
        with pytest.raises(psycopg.OperationalError, match=r"[Pp]eer"):
            psycopg.connect(f"host={run} port={port} user=postgres dbname=postgres").close()
    # The cluster's own OS user does get in over the socket: it is there, and it works.
    zone = healthy_cluster.spec.zones[0]
    run, port = _socket_dir(healthy_cluster, zone), healthy_cluster.ports[zone].postgres
    code = CONNECT.format(attempts=json.dumps(
        {"owner": f"host={run} port={port} user=postgres dbname=postgres"}))
    done = run_as_os_user([sys.executable, "-c", code], OS_USER, reach=[run])
    assert json.loads(done.stdout.splitlines()[-1]) == {"owner": "logged in as postgres"}


def _secret_files(base: Path) -> list[Path]:
    named = [base / "secrets.json", base / "state.json", base / "pgpass"]
    for zone in ("az1", "az2", "az3"):
        member = base / member_name(zone)
        named += [base / f"{member_name(zone)}.log", member / "patroni.yml", member / "pgpass",
                  *sorted((member / "log").iterdir())]
    return [p for p in named if p.exists()]


def test_a_stranger_reads_no_file_of_the_cluster(healthy_cluster: PostgresCluster) -> None:
    """M3/L3/L5: every directory of the cluster is 0700 and every file 0600 or stricter (the
    secrets, state, Patroni YAML, passfiles, logs included); another user who can walk up to
    each secret file still cannot read one."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(healthy_cluster.base):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            if stat.S_IMODE(mode) & 0o077 or (stat.S_ISDIR(mode) and stat.S_IMODE(mode) != 0o700):
                loose.append(f"{path} {oct(stat.S_IMODE(mode))}")
    assert not loose, loose
    assert stat.S_IMODE(healthy_cluster.base.stat().st_mode) == 0o700
    files = _secret_files(healthy_cluster.base)
    assert len(files) >= 12
    out = as_stranger(READ.format(paths=json.dumps([str(p) for p in files])), reach=files)
    assert set(out.values()) == {"PermissionError"}, out
    state = (healthy_cluster.base / "state.json").read_text()
    assert not [v for v in healthy_cluster.spec.secrets.values() if v in state]


STRANGER_REST = """
import httpx, json
out = {{}}
for port in {ports}:
    base = f"http://127.0.0.1:{{port}}"
    for auth in (None, ("patroni", "a-guess")):
        tag = f"{{port}} {{'guess' if auth else 'none'}}"
        out[f"POST /switchover {{tag}}"] = httpx.post(
            base + "/switchover", json={{"leader": "pg-nobody"}}, auth=auth, timeout=5).status_code
        out[f"PATCH /config {{tag}}"] = httpx.patch(
            base + "/config", json={{}}, auth=auth, timeout=5).status_code
        out[f"POST /restart {{tag}}"] = httpx.post(
            base + "/restart", json={{}}, auth=auth, timeout=5).status_code
    out[f"GET /cluster {{port}}"] = httpx.get(base + "/cluster", timeout=5).status_code
print(json.dumps(out))
"""


def test_a_stranger_cannot_drive_patroni(healthy_cluster: PostgresCluster) -> None:
    """H2: without the REST credentials (or with a guess) every change is 401; reading the
    cluster's shape stays open (SECURITY.md says why); with ours a change goes through."""
    ports = [healthy_cluster.ports[z].rest for z in healthy_cluster.spec.zones]
    out = as_stranger(STRANGER_REST.format(ports=ports))
    changes = {k: v for k, v in out.items() if not k.startswith("GET")}
    assert set(changes.values()) == {401}, out
    assert {v for k, v in out.items() if k.startswith("GET")} == {200}
    rest = f"http://127.0.0.1:{ports[0]}/config"
    ttl = httpx.get(rest, timeout=5).json()["ttl"]  # the same value again: a no-op change
    resp = httpx.patch(rest, json={"ttl": ttl}, auth=("patroni", _secret(healthy_cluster,
                                                                        "restapi")), timeout=5)
    assert resp.status_code == 200, resp.text


RAFT = """
import json
from pysyncobj.utility import TcpUtility, UtilityException
out = {{}}
for name, password in {passwords}.items():
    try:
        status = TcpUtility(password=password, timeout=3).executeCommand({node!r}, ["status"])
        out[name] = "answered" if isinstance(status, dict) and status.get("self") else "no"
    except UtilityException as exc:
        out[name] = "refused: " + str(exc)
print(json.dumps(out))
"""


def test_raft_answers_only_to_its_password(healthy_cluster: PostgresCluster) -> None:
    """H2: a member's raft port talks to a client holding the cluster's raft key (the probe
    works), and to no one else."""
    node = f"127.0.0.1:{healthy_cluster.ports[healthy_cluster.spec.zones[0]].raft}"
    passwords = {"none": None, "a guess": "a-guess", "the key": _secret(healthy_cluster, "raft")}
    # In a child: pysyncobj's import replaces socket.inet_ntop in the importing process.
    out = as_stranger(RAFT.format(passwords=repr(passwords), node=node))
    assert out["none"].startswith("refused") and out["a guess"].startswith("refused"), out
    assert out["the key"] == "answered"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_members_get_an_allow_listed_environment(healthy_cluster: PostgresCluster) -> None:
    """L4: a provider key in the environment that started the cluster reaches no guardian,
    Patroni or postgres process; they run as the cluster's OS user."""
    checked = 0
    for zone, guardian in STARTED_WITH_CANARY.items():
        if healthy_cluster.guardian_pid(zone) != guardian:
            continue  # restarted by a test since: not started under the canary
        for pid in (guardian, healthy_cluster.patroni_pid(zone),
                    healthy_cluster.postgres_pid(zone)):
            assert pid is not None
            env = _environ(pid)
            assert PARENT_ONLY_KEY not in env.values() and "OPENAI_API_KEY" not in env
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
            assert uid == os.stat(healthy_cluster.base / member_name(zone)).st_uid != 0
            checked += 1
    assert checked >= 3


def test_restore_never_follows_a_planted_symlink(healthy_cluster: PostgresCluster,
                                                 tmp_path: Path) -> None:
    """M5: links planted in a backup (by the OS user who writes it) to root's files and
    directories are restored as links, chowned themselves; the files keep root as owner.  A
    link where restore writes its settings makes it refuse."""
    from langchain_ha.cluster.backup import backup, restore
    from langchain_ha.cluster.pgbin import prepare_dir

    precious = tmp_path / "root-owned"
    precious.mkdir()
    (precious / "inside").write_text("root's")
    os.chmod(precious, 0o700)
    lone = tmp_path / "root-file"
    lone.write_text("root's")
    backup(healthy_cluster, prepare_dir(tmp_path / "bk"))
    data = tmp_path / "bk" / "data"
    (data / "evil-file").symlink_to(lone)
    (data / "evil-dir").symlink_to(precious)
    (data / "base" / "evil-nested").symlink_to(precious / "inside")
    shutil.copytree(tmp_path / "bk", tmp_path / "bk2", symlinks=True)
    server = restore(tmp_path / "bk", tmp_path / "restored",
                     healthy_cluster.spec.secrets["superuser"])
    try:
        with psycopg.connect(server.conninfo) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    for victim in (lone, precious, precious / "inside"):
        assert (victim.stat().st_uid, victim.stat().st_gid) == (0, 0), victim
    restored = tmp_path / "restored" / "data"
    assert (restored / "evil-dir").is_symlink()
    assert os.lstat(restored / "evil-dir").st_uid == os.stat(restored).st_uid != 0
    auto = tmp_path / "bk2" / "data" / "postgresql.auto.conf"
    auto.unlink()
    auto.symlink_to(lone)
    with pytest.raises(OSError):
        restore(tmp_path / "bk2", tmp_path / "restored2",
                healthy_cluster.spec.secrets["superuser"])
    assert lone.read_text() == "root's"
