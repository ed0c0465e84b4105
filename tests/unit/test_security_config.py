"""Local-cluster hardening that needs no process: what the Patroni and Caddy configs promise,
secrets redacted, private files, path checks of ``lcha logs`` and ``lcha ingest``, passwords
kept off the command line.  Each test names the SECURITY.md row it shows.
"""

from __future__ import annotations

import getpass
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from langchain_ha._files import open_private_log, write_private
from langchain_ha._redact import RedactingFormatter, redact
from langchain_ha._usage import UsageError
from langchain_ha.cli import main as lcha_main
from langchain_ha.cluster.balancer import admin_socket
from langchain_ha.cluster.caddy import caddy_config
from langchain_ha.cluster.patroni_config import (
    ClusterSpec,
    MemberPorts,
    patroni_config,
    pg_hba,
    socket_dir,
)
from langchain_ha.cluster.topology import Balancer
from langchain_ha.cluster.upcli import logs
from langchain_ha.store.ingest import iter_files

SECRETS = {"superuser": "su-secret", "replication": "repl-secret", "rewind": "rw-secret",
           "app": "app-secret", "restapi": "rest-secret", "raft": "raft-secret"}


def _config(tmp_path: Path, **spec: object) -> dict:  # type: ignore[type-arg]
    ports = {z: MemberPorts(5000 + i, 6000 + i, 7000 + i)
             for i, z in enumerate(("az1", "az2", "az3"))}
    cluster = ClusterSpec(base_dir=tmp_path, secrets=SECRETS, **spec)  # type: ignore[arg-type]
    return patroni_config(cluster, "az1", ports, Path("/pg/bin"), os_user="lcha")


def test_postgresql_trusts_no_one_and_its_socket_is_private(tmp_path: Path) -> None:
    """H1: no ``trust`` line; the socket takes only the cluster's OS user (peer, mapped to
    postgres); every TCP login is scram-sha-256; the socket directory is the member's
    ``run/`` with mode 0700."""
    pg = _config(tmp_path)["postgresql"]
    assert not [line for line in pg["pg_hba"] if "trust" in line]
    assert pg["pg_hba"][0] == "local all postgres peer map=lcha"
    assert "local all all reject" in pg["pg_hba"]
    assert all(line.endswith("scram-sha-256") for line in pg["pg_hba"]
               if line.startswith("host"))
    assert pg["pg_ident"] == ["lcha lcha postgres"]
    assert pg["parameters"]["unix_socket_directories"] == str(socket_dir(tmp_path, "az1"))
    assert pg["parameters"]["unix_socket_permissions"] == "0700"
    assert pg_hba(None)[1] == [f"lcha {getpass.getuser()} postgres"]


def test_patroni_rest_and_raft_are_authenticated(tmp_path: Path) -> None:
    """H2: REST basic auth and the raft key come from the secrets; etcd gets a user only when
    the secrets name one; Patroni's log files are 0600."""
    config = _config(tmp_path)
    assert config["restapi"]["authentication"] == {"username": "patroni",
                                                   "password": "rest-secret"}
    assert config["raft"]["password"] == "raft-secret"
    assert config["log"]["mode"] == 0o600
    etcd = _config(tmp_path, etcd_hosts=("127.0.0.1:2379",))["etcd3"]
    assert "username" not in etcd
    with_user = ClusterSpec(base_dir=tmp_path, etcd_hosts=("e:2379",), secrets={
        **SECRETS, "etcd_username": "patroni", "etcd_password": "etcd-secret"})
    ports = {"az1": MemberPorts(1, 2, 3)}
    etcd = patroni_config(with_user, "az1", ports, Path("/b"), os_user="lcha")["etcd3"]
    assert (etcd["username"], etcd["password"]) == ("patroni", "etcd-secret")


@pytest.mark.parametrize(("text", "secret"), [
    ("host=a port=1 user=postgres password=hunter2 dbname=x", "hunter2"),
    ("host=a password='two words' user=u", "two words"),
    ("postgresql://app:s3cr3t@db:5432/lcha", "s3cr3t"),
    ("PGPASSWORD=topsecret pg_dump", "topsecret"),
    ('{"password": "json-secret", "user": "u"}', "json-secret"),
    ("{'api_key': 'sk-abcdef123456'}", "sk-abcdef123456"),
    ("Authorization: Bearer lcha-abcdefghijklmnop", "lcha-abcdefghijklmnop"),
])
def test_redact_masks_every_credential_shape(text: str, secret: str) -> None:
    """L5/M3: what looks like a credential is printed as ``***``; the rest stays readable."""
    out = redact(text)
    assert secret not in out and "***" in out
    assert redact("host=a port=1 user=postgres") == "host=a port=1 user=postgres"


def test_a_logged_exception_carries_no_password() -> None:
    """L5: a traceback whose message holds a conninfo is redacted by our log formatter."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "start-up failed", None, None)
    try:
        raise RuntimeError("connect failed: host=127.0.0.1 user=postgres password=pw-in-exc")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    out = RedactingFormatter("%(message)s").format(record)
    assert "RuntimeError" in out and "pw-in-exc" not in out and "password=***" in out


def test_private_files_are_0600_from_creation_and_never_follow_a_symlink(
        tmp_path: Path) -> None:
    """L3: written with O_CREAT|O_EXCL 0600 whatever the umask, replaced atomically; a symlink
    planted where the file goes is replaced, its target untouched."""
    old = os.umask(0)
    try:
        target = tmp_path / "secrets.json"
        write_private(target, '{"a": 1}')
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        victim = tmp_path / "victim"
        victim.write_text("keep")
        planted = tmp_path / "state.json"
        planted.symlink_to(victim)
        write_private(planted, "new")
        assert victim.read_text() == "keep"
        assert not planted.is_symlink() and planted.read_text() == "new"
        assert stat.S_IMODE(planted.stat().st_mode) == 0o600
        log = tmp_path / "x.log"
        log.write_text("")
        os.chmod(log, 0o644)  # as an older version left it
        os.close(open_private_log(log))
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    finally:
        os.umask(old)


def test_caddy_admin_is_a_private_unix_socket_with_client_timeouts(tmp_path: Path) -> None:
    """M4/M2: no TCP admin listener; the socket is 0600 in our directory; clients get bounded
    header and body time, an idle timeout and a header cap."""
    spec = Balancer(header_timeout_s=7, body_timeout_s=20, idle_timeout_s=90,
                    max_header_bytes=32768)
    sock = admin_socket(tmp_path / "caddy")
    config = caddy_config(spec, 8080, sock, (), tmp_path / "data")
    assert config["admin"] == {"listen": f"unix/{sock}|0600"}
    server = config["apps"]["http"]["servers"]["lcha"]
    assert server["listen"] == ["127.0.0.1:8080"]
    assert (server["read_header_timeout"], server["read_timeout"], server["idle_timeout"],
            server["max_header_bytes"]) == ("7.0s", "20.0s", "90.0s", 32768)
    assert "write_timeout" not in server  # streams are bounded by the replica's deadline
    deep = tmp_path.joinpath(*["d" * 40] * 3) / "caddy"
    far = admin_socket(deep)
    assert len(str(far)) <= 100 and far.parent.name.startswith(f"lcha-{os.getuid()}-")


def _state_with_logs(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "supervisor.log").write_text("ready\n")
    (tmp_path / "outside.log").write_text("not ours to show\n")  # next to the state dir
    return root


@pytest.mark.parametrize("name", ["../../outside", "../../../outside", "../secrets",
                                  str(Path("/etc/passwd")), "a/../b", ".hidden", ""])
def test_lcha_logs_refuses_names_that_are_paths(tmp_path: Path, name: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """L6: ``lcha logs NAME`` names a log of the state directory, never a path (the first
    one reaches a real ``outside.log`` next to the state directory)."""
    with pytest.raises(UsageError, match="NAME"):
        logs(_state_with_logs(tmp_path), name, 10)
    assert "not ours" not in capsys.readouterr().out


def test_lcha_logs_refuses_a_planted_symlink(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """L6: a log that is a symlink to a file outside the state directory is not shown."""
    root = _state_with_logs(tmp_path)
    outside = tmp_path / "outside-secret"
    outside.write_text("root-only content\n")
    (root / "logs" / "evil.log").symlink_to(outside)
    with pytest.raises(UsageError, match="outside"):
        logs(root, "evil", 10)
    assert logs(root, "supervisor", 10) == 0
    assert "root-only" not in capsys.readouterr().out


def test_ingest_skips_symlinks_and_says_so(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """L6: a symlink inside the tree (to a file, to a directory) is not followed."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text("# FAQ")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "shadow.txt").write_text("root-only")
    (docs / "linked.txt").symlink_to(secret_dir / "shadow.txt")
    (docs / "linked-dir").symlink_to(secret_dir)
    skipped: list[Path] = []
    assert [p.name for p in iter_files(docs, skipped)] == ["faq.md"]
    assert sorted(p.name for p in skipped) == ["linked-dir", "linked.txt"]


def test_a_password_on_the_command_line_is_warned_about_and_never_echoed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """L6: ``--db`` with a password works but warns (the process list shows it); the error
    line that follows does not repeat it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code = lcha_main(["ingest", str(empty), "--db",
                      "host=127.0.0.1 port=1 user=u password=argv-secret dbname=x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "holds a password" in err and "argv-secret" not in err
    assert lcha_main(["ingest", str(empty), "--db", "not a conninfo"]) == 2
    assert "not a libpq conninfo" in capsys.readouterr().err
