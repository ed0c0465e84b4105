"""The member guardian: runs Patroni and never lets its postgres outlive it.

Patroni starts postgres detached.  If Patroni died and its postgres stayed up as primary,
the leader key would expire, a standby would be promoted, and two writable primaries would
exist.  The guardian is Patroni's parent: the moment Patroni exits for any reason it SIGKILLs
that member's postmaster (PID from ``postmaster.pid``), then restarts Patroni, which rejoins
(as leader again if its key has not expired yet, else as a replica, with pg_rewind).  If the
guardian itself dies, Patroni and postgres go on unharmed: no split either way.

Synchronous replication closes the remaining window: a write on an isolated old primary is not
acknowledged while its synchronous standby follows the new leader.

Run as ``python -m langchain_ha.cluster.guardian PATRONI_YML DATA_DIR`` (as the postgres user).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from langchain_ha._proc import pid_matches


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


def main(config: str, data_dir: str) -> int:
    """Supervise Patroni until SIGTERM; see the module docstring."""
    data = Path(data_dir)
    stopping = False
    child: subprocess.Popen[bytes] | None = None

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
    sys.exit(main(sys.argv[1], sys.argv[2]))
