"""Local hardening with real processes but no cluster (seconds): the archive command run by a
real shell, children's environment and file modes, the private mount view that lets a dropped
child reach root's paths, a PostgreSQL that another user cannot log in to and that changes no
directory mode, and Caddy's admin socket and client timeouts.  Rows refer to SECURITY.md.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

import langchain_ha
from langchain_ha._proc import BASE_ENV, Child, child_env, free_port, python_reach, run_as
from langchain_ha.cluster.backup import restore_command
from langchain_ha.cluster.caddy import CaddyBalancer
from langchain_ha.cluster.patroni_config import archive_command
from langchain_ha.cluster.pgbin import LocalPostgres, prepare_dir
from langchain_ha.cluster.topology import Balancer
from tests.support.fixtures_serve import Replica
from tests.support.stranger import CONNECT, READ, UNIX_CONNECT, as_stranger, stranger

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (drops to other users)")

def test_archive_and_restore_commands_quote_their_paths(tmp_path: Path) -> None:
    """L6: a state directory named like a shell command is a path, not a command: the real
    archive and restore commands, run by a real shell, copy the segment and run nothing."""
    base = tmp_path / "db dir; touch INJECTED"
    (base / "wal_archive").mkdir(parents=True)
    wal = tmp_path / "pg_wal" / "000000010000000000000001"
    wal.parent.mkdir()
    wal.write_bytes(b"wal")
    command = archive_command(base).replace("%f", wal.name).replace("%p", str(wal))
    done = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (base / "wal_archive" / wal.name).read_bytes() == b"wal"
    back = tmp_path / "restored"
    command = restore_command(base / "wal_archive").replace("%f", wal.name).replace(
        "%p", str(back))
    assert subprocess.run(["sh", "-c", command], cwd=tmp_path, check=False).returncode == 0
    assert back.read_bytes() == b"wal"
    assert not (tmp_path / "INJECTED").exists()


def test_children_get_an_allow_listed_environment_a_0077_umask_and_a_0600_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L4/L5: a provider key of the parent reaches no child unless the caller names it;
    what a child creates is 0600; its log is 0600."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-only")
    monkeypatch.setenv("LCHA_SETTING", "x")
    assert "OPENAI_API_KEY" not in child_env(None)
    assert child_env(None, (*BASE_ENV, "LCHA_*"))["LCHA_SETTING"] == "x"
    out = tmp_path / "env.json"
    child = Child([sys.executable, "-c", "import json, os, sys; "
                   "json.dump(dict(os.environ), open(sys.argv[1], 'w'))", str(out)],
                  name="env", env={"GIVEN": "1"}, log_path=tmp_path / "child.log")
    child.proc.wait(30)
    child.stop()
    env = json.loads(out.read_text())
    assert env["GIVEN"] == "1" and "OPENAI_API_KEY" not in env and "LCHA_SETTING" not in env
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "child.log").stat().st_mode) == 0o600


def _modes(paths: list[Path]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for path in paths:
        for p in (path, *path.parents):
            seen[str(p)] = os.stat(p).st_mode
    return seen


def _host_mounts() -> list[str]:
    return [line.split(" - ")[0].split(" ", 4)[4] for line in
            Path("/proc/self/mountinfo").read_text().splitlines()]


def test_a_dropped_child_reaches_root_paths_in_a_private_view_only(tmp_path: Path) -> None:
    """L4: a 0700 root directory's content is reachable by the dropped child when asked for
    (``reach``), and by nobody else; no mode changes and no mount shows outside; the reached
    file's own mode still holds."""
    locked = tmp_path / "locked"
    (locked / "pub").mkdir(parents=True)
    os.chmod(locked, 0o700)
    (locked / "pub" / "open.txt").write_text("for the child")
    private = locked / "pub" / "private.txt"
    private.write_text("root only")
    os.chmod(private, 0o600)
    before, mounts = _modes([locked / "pub" / "open.txt"]), _host_mounts()
    paths = json.dumps([str(locked / "pub" / "open.txt"), str(private)])
    reached = as_stranger(READ.format(paths=paths), reach=[locked / "pub"])
    assert reached[str(locked / "pub" / "open.txt")] == "read 13 bytes"
    assert reached[str(private)] == "PermissionError"
    unreached = as_stranger(READ.format(paths=paths))
    assert set(unreached.values()) == {"PermissionError"}
    assert _modes([locked / "pub" / "open.txt"]) == before
    assert _host_mounts() == mounts


def test_local_postgres_takes_no_login_without_its_password_and_opens_no_directory(
        tmp_path: Path) -> None:
    """H1/L4: another user, even one who can walk up to the data directory, cannot log in
    over the socket or TCP without the password (with it, they can: the probe works); the
    server changed the mode of no directory above the interpreter, the package or its data."""
    watched = [Path(sys.executable).resolve(), Path(sysconfig.get_paths()["purelib"]),
               Path(langchain_ha.__file__).resolve(), tmp_path]
    before = _modes(watched)
    base = prepare_dir(tmp_path / "pg")
    pg = LocalPostgres(base / "data", free_port(), password="local-pw-7d1")
    pg.start()
    try:
        attempts = json.dumps({
            "socket": f"host={pg.data_dir} port={pg.port} user=postgres dbname=postgres",
            "tcp": f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres",
            "tcp with the password": pg.conninfo})
        out = as_stranger(CONNECT.format(attempts=attempts), reach=[pg.data_dir])
        assert out["tcp with the password"] == "logged in as postgres", out
        assert out["socket"].startswith("OperationalError"), out
        assert out["tcp"].startswith("OperationalError") and "password" in out["tcp"], out
        sockets = [p for p in pg.data_dir.iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
        assert sockets and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in sockets)
        assert stat.S_IMODE(pg.data_dir.stat().st_mode) == 0o700
    finally:
        pg.stop()
    assert _modes(watched) == before


@pytest.fixture
def caddy(tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = Balancer(header_timeout_s=1, body_timeout_s=2, idle_timeout_s=5,
                    max_header_bytes=4096)
    lb = CaddyBalancer(spec, free_port(), tmp_path)
    child = lb.start()
    try:
        yield lb, child
    finally:
        child.stop()
        lb.cleanup()


def test_caddy_admin_is_only_a_private_socket(caddy) -> None:  # type: ignore[no-untyped-def]
    """M4: our own calls drive Caddy over its socket; Caddy listens on no TCP port but the
    balancer's; the socket is 0600 in a 0700 directory, and another user cannot connect to
    it even when the path up to it is open to them."""
    lb, child = caddy
    lb.apply([])
    assert lb.view() == []
    listening = {c.laddr for c in psutil.Process(child.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", lb.port)}
    sock = lb.admin_socket
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    probe = UNIX_CONNECT.format(path=str(sock))
    assert as_stranger(probe, reach=[sock]) == "PermissionError"
    assert as_stranger(probe, reach=[sock.parent]) == "PermissionError"


def test_caddy_cuts_slow_and_oversized_headers(caddy) -> None:  # type: ignore[no-untyped-def]
    """M2 (Caddy side): a client that never finishes its headers is disconnected after
    ``header_timeout_s``; headers above ``max_header_bytes`` get 431."""
    lb, _ = caddy
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/invoke HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        assert conn.recv(100) == b""  # closed by Caddy
        assert time.monotonic() - began < 5
    # Go's server allows 4 KiB of slack above the cap.
    big = httpx.get(f"{lb.url}/v1/x", headers={"X-Big": "a" * 10000}, timeout=10)
    assert big.status_code == 431


def test_the_stranger_is_not_one_of_ours() -> None:
    """The probes above mean something only if the stranger is neither root nor ours."""
    import pwd

    entry = pwd.getpwnam(stranger())
    assert entry.pw_uid not in (0, pwd.getpwnam("lcha").pw_uid)
    assert [sys.executable] == run_as([sys.executable], None)
    assert python_reach()


def test_db_takes_a_conninfo_without_password_and_a_passfile_or_pgpassword(
        local_pg: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """L6: ``--db`` needs no password on the command line: ``--passfile`` or ``$PGPASSWORD``
    supply it, and no warning is printed then."""
    from langchain_ha._files import write_private
    from langchain_ha.cli import main as lcha_main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.")
    bare = f"host=127.0.0.1 port={local_pg.port} user=postgres dbname=postgres"
    passfile = tmp_path / "pgpass"
    write_private(passfile, f"*:*:*:postgres:{local_pg.password}\n")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # not the user's ~/.pgpass
    assert lcha_main(["ingest", str(docs), "--db", bare, "--passfile", str(passfile),
                      "--collection", "t_passfile"]) == 0
    monkeypatch.setenv("PGPASSWORD", local_pg.password)
    assert lcha_main(["ingest", str(docs), "--db", bare, "--collection", "t_pgpassword"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("enqueued 1 ingestion task") == 2
    assert "warning" not in captured.err
    monkeypatch.delenv("PGPASSWORD")  # and without either, no login (the control)
    assert lcha_main(["ingest", str(docs), "--db", bare, "--collection", "t_none"]) == 1


def test_a_replica_logs_an_exception_without_its_password(
        serve_factory: Callable[..., Replica]) -> None:
    """L5: the app's exception (whose message quotes a conninfo) is logged redacted."""
    replica = serve_factory("tests.support.apps:leaky", env={"LCHA_API_KEYS": "k-31"})
    resp = httpx.post(replica.url + "/v1/invoke", json={"input": "q"},
                      headers={"Authorization": "Bearer k-31"}, timeout=10)
    assert resp.status_code == 502
    deadline = time.monotonic() + 5
    while "could not connect" not in replica.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = replica.log()
    assert "could not connect" in log and "password=***" in log
    assert "leaked-pw-31" not in log and "leaked-pw-31" not in resp.text
