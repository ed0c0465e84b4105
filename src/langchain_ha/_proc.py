"""Child processes started and stopped by PID, and free loopback ports.

Every process this project starts (simulators, replicas, Patroni, Caddy) goes through
:class:`Child`, so that stopping is always the same: SIGTERM to its process group, a bounded
wait, then SIGKILL.  Nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


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
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.log_path = Path(log_path) if log_path else None
        self.proc = subprocess.Popen(
            self.argv,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user(user),
        )

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
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self._tail()}")
            try:
                resp = httpx.get(url, timeout=1.0)
                if status is None or resp.status_code == status:
                    return
                last = resp.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.name} not answering {url} after {timeout}s ({last}){self._tail()}"
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
        if not isinstance(self._log, int):
            self._log.close()
        return self.proc.returncode

    def _tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")[-2000:]
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


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` with its own group and no supplementary groups
    (root's group would otherwise decide access to root-owned directories)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def python_argv(*args: str) -> list[str]:
    """argv that runs this interpreter with ``args`` (so children use the same environment)."""
    return [sys.executable, *args]
