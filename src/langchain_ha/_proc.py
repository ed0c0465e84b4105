"""Child processes started and stopped by PID, and free loopback ports.

Every process this project starts (simulators, replicas, Patroni, Caddy) goes through
:class:`Child`, so that stopping is always the same: SIGTERM to its process group, a bounded
wait, then SIGKILL.  Nothing is left running.

A child gets an allow-listed environment (:data:`BASE_ENV` plus what its caller passes), a
0077 umask and a 0600 log; started by root with a ``user``, it runs as that user through
:mod:`langchain_ha._runas`, which makes the paths it needs (``reach``) reachable in a private
mount namespace instead of changing any directory's mode.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import httpx

from langchain_ha._files import open_private_log
from langchain_ha._redact import redact

LOOPBACK = "127.0.0.1"
CHILD_UMASK = 0o077
BASE_ENV: tuple[str, ...] = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TERM",
    "PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
    # Reaching HTTPS endpoints through this machine's proxy and CA (never credentials).
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)
"""Variables every child inherits; anything else (provider keys above all) is passed by name."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_is_listening(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class Child:
    """A child process in its own session, stopped by PID (its whole process group)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        inherit: Iterable[str] = BASE_ENV,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        user: str | None = None,
        reach: Iterable[str | Path] = (),
        enter: Sequence[str] = (),
    ) -> None:
        """Start ``argv``.  ``env`` is added to the variables of ``os.environ`` that match
        ``inherit`` (names or globs); ``user`` (when we are root) and ``reach`` are passed to
        :func:`run_as`; ``enter`` is a command that execs the rest in another network
        namespace (``ip netns exec NS``: a lab zone), so the PID is still the program's."""
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path) if log_path else None
        self._log = open_private_log(log_path) if log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [*enter, *run_as(self.argv, user, reach=reach, cwd=cwd)],
                env=child_env(env, inherit, user),
                cwd=str(cwd) if cwd else None,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=CHILD_UMASK,
            )
        except BaseException:
            self._close_log()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_http(self, url: str, timeout: float = 30.0, status: int | None = 200) -> None:
        """Wait until ``url`` answers (with ``status`` if given); raise if the child died."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.tail()}")
            try:
                resp = httpx.get(url, timeout=1.0)
                if status is None or resp.status_code == status:
                    return
                last = resp.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.name} not answering {url} after {timeout}s ({last}){self.tail()}"
        )

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child itself (not its group): how drills inject faults."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it. Idempotent."""
        if self.alive():
            _kill_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Grandchildren left in the group (e.g. a detached postgres) go too.
        _kill_group(self.pid, signal.SIGKILL)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log >= 0:
            with contextlib.suppress(OSError):
                os.close(self._log)
            self._log = subprocess.DEVNULL

    def tail(self) -> str:
        """The end of its log (redacted), for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        text = redact(self.log_path.read_text(errors="replace")[-2000:])
        return f"\n--- {self.log_path} (tail) ---\n{text}"


class Adopted:
    """A process this one did not start (found by PID in a state file), stopped the same way.

    ``marker`` must appear in its command line, so a recycled PID is never mistaken for it.
    """

    def __init__(self, pid: int, *, name: str, marker: str) -> None:
        self.name = name
        self._pid = pid
        self.marker = marker

    @property
    def pid(self) -> int:
        return self._pid

    def alive(self) -> bool:
        return pid_matches(self._pid, self.marker)

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM its process group, wait up to ``timeout``, then SIGKILL the group."""
        if self.alive():
            _kill_group(self._pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.alive():
            _kill_group(self._pid, signal.SIGKILL)
        return None


def pid_matches(pid: int, marker: str) -> bool:
    """True when ``pid`` runs (not a zombie) with ``marker`` in its command line."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X") and marker in cmdline


def child_env(env: Mapping[str, str] | None, inherit: Iterable[str] = BASE_ENV,
              user: str | None = None) -> dict[str, str]:
    """The environment of a child: the variables of ``os.environ`` matching ``inherit``, then
    ``env``; a child dropped to ``user`` gets that user's home as ``HOME`` unless ``env`` says
    otherwise."""
    patterns = list(inherit)
    out = {k: v for k, v in os.environ.items()
           if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if user is not None and os.geteuid() == 0:
        out["HOME"] = pwd.getpwnam(user).pw_dir
    out.update(env or {})
    return out


@cache
def system_user(name: str) -> str:
    """``name``, a system user with no login shell, created the first time it is needed."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True, capture_output=True)
    return name


def user_ids(user: str) -> tuple[int, int]:
    """(uid, gid) of ``user``."""
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def python_reach() -> list[str]:
    """What a Python child needs: this interpreter's prefixes and every directory on
    ``sys.path`` (stdlib, site-packages, the project's source, ``PYTHONPATH``)."""
    paths = {sys.base_prefix, sys.prefix, sysconfig.get_paths()["purelib"],
             str(Path(__file__).resolve().parent.parent)}
    paths.update(p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p))
    return sorted(paths)


def run_as(argv: Sequence[str], user: str | None, *, reach: Iterable[str | Path] = (),
           cwd: str | Path | None = None) -> list[str]:
    """``argv`` as it must be started to run as ``user``: unchanged when ``user`` is None or
    we are not root, else through :mod:`langchain_ha._runas`, which gives the program a view
    in which every path of ``reach`` (and ``cwd``) is reachable, then drops to ``user``."""
    if user is None or os.geteuid() != 0:
        return list(argv)
    uid, gid = user_ids(user)
    where = str(Path(cwd).absolute()) if cwd else None
    spec = {"uid": uid, "gid": gid, "user": user,
            "reach": sorted({str(p) for p in reach} | ({where} if where else set())),
            "cwd": where}
    launcher = Path(__file__).with_name("_runas.py")
    return [sys.executable, "-I", "-S", str(launcher), json.dumps(spec), "--", *argv]


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def python_argv(*args: str) -> list[str]:
    """argv that runs this interpreter with ``args`` (so children use the same environment)."""
    return [sys.executable, *args]
