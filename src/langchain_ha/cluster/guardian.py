"""The member guardian: runs Patroni and never lets its postgres outlive it.

Patroni starts postgres detached.  If Patroni died and its postgres stayed up as primary,
the leader key would expire, a standby would be promoted, and two writable primaries would
exist.  The guardian is Patroni's parent: the moment Patroni exits for any reason it SIGKILLs
that member's postmaster (PID from ``postmaster.pid``), then restarts Patroni, which rejoins
(as leader again if its key has not expired yet, else as a replica, with pg_rewind).  If the
guardian itself dies, Patroni and postgres go on unharmed: no split either way.

Synchronous replication closes the remaining window: a write on an isolated old primary is not
acknowledged while its synchronous standby follows the new leader.

**Gray failures.**  A member that hangs without dying is worse than a dead one: a frozen
postgres (SIGSTOP, a stuck kernel call) keeps its sockets, Patroni's queries to it block, and
Patroni neither fails over nor lets go of the leader key: the cluster waited a 40 s freeze
out.  So the guardian also watches (:class:`FreezeWatch`): once a second it opens a fresh
connection to its postgres over the socket and runs ``SELECT 1``, and it asks Patroni's REST
API for ``/liveness``.  Only *silence* counts: an answer, even an error ("starting up",
"shutting down") or a refused connection (nothing running, Patroni's business), resets the
clock.  Silent for ``freeze_after_s`` (6 s by default, three probes of 2 s):

- postgres: the guardian SIGKILLs its whole process tree (postmaster and backends: a stopped
  backend would otherwise keep the shared memory and block a restart).  Patroni's blocked query
  fails, it finds postgres crashed and, with ``primary_start_timeout: 0`` (our DCS default), a
  leader hands its key to the synchronous standby at once instead of restarting in place.  A
  frozen primary is failed over in freeze_after_s plus a loop or two, inside a node loss's ttl.
- Patroni: the guardian SIGKILLs it, which fences its postgres (above) and restarts it.

Why here and not in the supervisor or Patroni's settings: the guardian is the one process on
the member's machine that owns both children, survives a partition of that machine, and can
act on postgres by PID; Patroni's own timeouts do not cover a server that stops answering
(its queries have no client-side timeout), and a supervisor across a network cannot tell a
frozen member from a cut link.

Run as ``python -m langchain_ha.cluster.guardian PATRONI_YML DATA_DIR [--freeze-after S]``
(as the postgres user; ``--freeze-after 0`` turns the watch off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil
import psycopg
import yaml

from langchain_ha._proc import pid_matches

PROBE_TIMEOUT_S = 2.0
FREEZE_AFTER_S = 6.0


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's PID from ``postmaster.pid`` (None if the file is stale: a
    SIGKILLed postmaster leaves it behind, and its PID may belong to another process now)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid_matches(pid, "postgres") else None


def kill_postgres(data_dir: Path) -> None:
    """SIGKILL this member's postmaster (its backends exit when they see it gone)."""
    pid = postmaster_pid(data_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def signal_postgres_tree(data_dir: Path, sig: int) -> list[int]:
    """Send ``sig`` to this member's postmaster and every process under it; their PIDs."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    return [p.pid for p in procs]


class Silence:
    """How long something has not answered (None: it answered at its last probe)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def heard(self) -> None:
        self.since = None

    def silent_for(self, now: float) -> float:
        if self.since is None:
            self.since = now
        return now - self.since


async def _ask_postgres(conninfo: str) -> None:
    async with asyncio.timeout(PROBE_TIMEOUT_S):
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        async with conn:
            await conn.execute("SELECT 1")


def postgres_answers(conninfo: str) -> bool:
    """False only when postgres stayed silent for the probe's timeout; any answer (a row, an
    error it sent, a refused connection) is True."""
    try:
        asyncio.run(_ask_postgres(conninfo))
    except (TimeoutError, psycopg.errors.ConnectionTimeout):
        return False
    except (psycopg.Error, OSError):
        pass
    return True


def patroni_answers(url: str) -> bool:
    """False only when Patroni's REST API did not answer within the probe's timeout."""
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT_S)
    except httpx.TimeoutException:
        return False
    except httpx.HTTPError:
        pass
    return True


class FreezeWatch(threading.Thread):
    """Probe postgres and Patroni once a second; act on a member that went silent (see the
    module docstring)."""

    def __init__(self, config: dict[str, Any], data: Path, freeze_after_s: float,
                 patroni_pid: Callable[[], int | None]) -> None:
        super().__init__(name="freeze-watch", daemon=True)
        pg = config["postgresql"]
        socket_dir = pg["parameters"]["unix_socket_directories"]
        port = pg["listen"].rsplit(":", 1)[1]
        self.conninfo = (f"host={socket_dir} port={port} user=postgres dbname=postgres "
                         f"connect_timeout={int(PROBE_TIMEOUT_S)} application_name=lcha-guardian")
        self.liveness = f"http://{config['restapi']['listen']}/liveness"
        self.data = data
        self.freeze_after_s = freeze_after_s
        self.patroni_pid = patroni_pid
        self.stopped = threading.Event()
        self._pg, self._patroni = Silence(), Silence()
        self._watched_pid: int | None = None

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.check_postgres()
            self.check_patroni()

    def check_postgres(self) -> None:
        pid = postmaster_pid(self.data)
        if pid is None or pid != self._watched_pid:
            self._watched_pid = pid
            self._pg.heard()
            return
        if postgres_answers(self.conninfo):
            self._pg.heard()
            return
        silent = self._pg.silent_for(time.monotonic() - PROBE_TIMEOUT_S)
        if silent >= self.freeze_after_s:
            killed = signal_postgres_tree(self.data, signal.SIGKILL)
            print(f"guardian: postgres (pid {pid}) did not answer for {silent:.1f} s: frozen; "
                  f"SIGKILLed its {len(killed)} processes so that Patroni fails over",
                  flush=True)
            self._pg.heard()

    def check_patroni(self) -> None:
        pid = self.patroni_pid()
        if pid is None or patroni_answers(self.liveness):
            self._patroni.heard()
            return
        silent = self._patroni.silent_for(time.monotonic() - PROBE_TIMEOUT_S)
        if silent >= self.freeze_after_s:
            print(f"guardian: Patroni (pid {pid}) did not answer for {silent:.1f} s: frozen; "
                  "SIGKILLed it (its postgres goes with it)", flush=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            self._patroni.heard()


def main(config: str, data_dir: str, freeze_after_s: float = FREEZE_AFTER_S) -> int:
    """Supervise Patroni until SIGTERM; see the module docstring."""
    data = Path(data_dir)
    stopping = False
    child: subprocess.Popen[bytes] | None = None
    if freeze_after_s > 0:
        settings = yaml.safe_load(Path(config).read_text())
        FreezeWatch(settings, data, freeze_after_s,
                    lambda: child.pid if child is not None and child.poll() is None else None
                    ).start()

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()  # Patroni stops postgres cleanly and releases the leader key

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    backoff = 0.5
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "patroni", config])
        (data.parent / "patroni.pid").write_text(str(child.pid))
        while child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=30 if stopping else 1)
            if stopping and child.poll() is None:
                child.kill()
        kill_postgres(data)  # never leave a postgres without its Patroni
        if stopping:
            break
        print(f"guardian: patroni exited ({child.returncode}); postgres stopped; restarting",
              flush=True)
        backoff = 0.5 if time.monotonic() - started > 60 else min(backoff * 2, 5.0)
        time.sleep(backoff)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="guardian")
    parser.add_argument("config")
    parser.add_argument("data_dir")
    parser.add_argument("--freeze-after", type=float, default=FREEZE_AFTER_S)
    args = parser.parse_args()
    sys.exit(main(args.config, args.data_dir, args.freeze_after))
