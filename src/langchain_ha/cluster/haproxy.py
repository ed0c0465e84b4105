"""HAProxy as the load balancer: a config file written once, upstream changes live through its
runtime API.

The default backend of :mod:`~langchain_ha.cluster.balancer` where ``haproxy`` is installed
(Debian's 2.6 here).  What it does that Caddy 2.11 cannot: a replica's 503 (a request it shed)
is retried on another replica, so a 503 reaches the client only when every replica refused.

Retries (``retry-on conn-failure empty-response 503``, ``option redispatch 1``, ``retries`` =
the replicas the topology runs, ``zones x per_zone``): a refused connection (an empty slot, a
replica just killed), a connection closed with no response (a replica SIGKILLed while it held
the request) and a shed request are each sent again to another server.  Not one retry per slot:
redispatch avoids only the server just tried, so with 11 retries a request every replica refuses
can bounce between two busy replicas up to eleven times (with that setting the replica-crash
drill at 96 req/s saw 503s with a p99 of 14 s).  Every request carries an ``Idempotency-Key``
(the client's, or one HAProxy adds), so a replay is answered once.  ``response-timeout`` is left
out on purpose: a replica that is slow to answer is working on the request, and replaying it
elsewhere doubles the load exactly when the replicas are busiest (the replica's own deadline
answers 504).  ``option http-buffer-request`` waits for the body before choosing a server,
so a retry can resend it; a body larger than ``tune.bufsize`` (256 KiB here) still goes through
but is not retried (HAProxy says so in its docs on L7 retries).

Shedding where it is cheap: each replica's ``/readyz`` says how many requests it would hold
now, running and queued (its ``room``: the adaptive limit plus the queue predicted to start
within the admission objective, :meth:`~langchain_ha.serve.admission.Admission.room`); the
supervisor keeps every server's ``maxconn`` at its replica's room (``set maxconn server``).
HAProxy then sends a replica no more than it would take, and when every replica up is at its
room (``be_conn_free`` is 0) the frontend answers the 503 itself.  Asking each busy replica in
turn was what made shedding slow: at twice the capacity every shed request cost four trips into
saturated Python processes (503 p99 ~350 ms, with one cut of the adaptive limit held too long
~1.2 s); refused in HAProxy it costs no replica anything.  The replica's own admission stays the
authority between two probes (0.5 s apart): its 503 is retried as above.

Timeouts: ``timeout http-request`` (``balancer.header_timeout_s``) bounds how long a client
may take to send its headers and, with the buffered body, the body too; ``timeout client``
(``balancer.body_timeout_s``) any client inactivity; ``timeout server`` the replica's own
``request_timeout_s`` plus its drain grace, so the replica's deadline answers first.

The runtime API is a unix socket (``stats socket ... mode 600 level admin``) in a 0700
directory of ours: no other local user can re-route traffic.  The supervisor lists every slot
all the time, so the server list never changes while HAProxy runs: weights change with
``set server b/sN weight W``; slots without a replica fail their ``/readyz`` checks and get no
traffic.  TLS is Caddy's job (its internal CA): ``balancer.tls`` is refused here.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_ha._files import private_dir, write_private
from langchain_ha._proc import Child
from langchain_ha.cluster.balancer import (
    Upstream,
    admin_socket,
    private_socket_dir,
    remove_socket,
)
from langchain_ha.cluster.state import BalancerRecord
from langchain_ha.cluster.topology import Balancer

BACKEND = "replicas"
MAX_WEIGHT = 256
BUFSIZE = 256 * 1024


def haproxy_binary() -> str | None:
    """The ``haproxy`` executable on PATH (or in /usr/sbin, where Debian puts it), or None."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def server_name(index: int) -> str:
    """The name of the ``index``-th slot's server in the backend."""
    return f"s{index}"


def haproxy_config(spec: Balancer, port: int, sock: Path, upstreams: Sequence[Upstream], *,
                   server_timeout_s: float, retries: int | None = None) -> str:
    """The whole HAProxy config for ``upstreams`` behind ``127.0.0.1:port``.  ``retries``
    (when ``balancer.retries`` is 0): by default one per slot but the first."""
    if spec.tls:
        raise ValueError("balancer.tls: the HAProxy backend serves plain HTTP (Caddy issues the "
                         "certificates); set balancer.kind: caddy for tls")
    checks = spec.checks
    retries = spec.retries or retries or max(1, len(upstreams) - 1)
    check = (f"check inter {int(checks.interval_s * 1000)} rise {checks.healthy_threshold} "
             f"fall {checks.unhealthy_threshold}")
    servers = [
        f"    server {server_name(i)} {u.dial} weight {min(MAX_WEIGHT, u.weight)} {check}"
        + (f" maxconn {u.max_requests}" if u.max_requests else "")
        + (" backup" if u.standby else "") + ("" if u.occupied else " disabled")
        for i, u in enumerate(upstreams)]
    return "\n".join([
        "global",
        f"    stats socket {sock} mode 600 level admin",
        "    log stderr format raw local0 warning",
        f"    tune.bufsize {BUFSIZE}",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 1s",
        f"    timeout http-request {_ms(spec.header_timeout_s)}",
        f"    timeout client {_ms(spec.body_timeout_s)}",
        f"    timeout http-keep-alive {_ms(spec.idle_timeout_s)}",
        f"    timeout server {_ms(server_timeout_s)}",
        f"    timeout check {_ms(checks.timeout_s)}",
        "",
        # HAProxy's own 503 (no replica up) in the replica's shape, with Retry-After.
        "    http-error status 503 content-type application/json hdr Retry-After 1 string "
        "'{\"error\": {\"type\": \"overloaded\", \"message\": \"no replica is up; "
        "retry later\"}}'",
        "",
        "frontend lcha",
        f"    bind 127.0.0.1:{port}",
        "    http-request return status 431 content-type application/json string "
        f"'{{\"error\": {{\"type\": \"headers_too_large\", \"field\": \"headers\", "
        f"\"limit\": {spec.max_header_bytes}}}}}' "
        f"if {{ req.hdrs,length gt {spec.max_header_bytes} }}",
        # Every replica up is at its room: the 503 from here, in microseconds (asking each
        # busy replica in turn took a p99 of ~350 ms at twice the capacity).  -1 (a server
        # with no maxconn) never matches.
        "    http-request return status 503 content-type application/json hdr Retry-After 1 "
        "string '{\"error\": {\"type\": \"overloaded\", \"message\": \"every replica is "
        "at its limit; retry later\"}}' "
        f"if {{ nbsrv({BACKEND}) gt 0 }} {{ be_conn_free({BACKEND}) eq 0 }}",
        "    http-request set-header Idempotency-Key lb-%[uuid()] "
        "unless { req.hdr(Idempotency-Key) -m found }",
        "    option http-buffer-request",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance leastconn",
        "    option allbackups",
        f"    option httpchk GET {checks.path}",
        "    http-check expect status 200",
        "    retry-on conn-failure empty-response 503",
        "    option redispatch 1",
        f"    retries {retries}",
        *servers,
        "",
    ])


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def runtime(sock: Path, command: str, timeout: float = 2.0) -> str:
    """Send one command (or several, ``;``-separated) to HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def stats_view(sock: Path) -> list[dict[str, Any]] | None:
    """HAProxy's view of each server (``show stat``): address, requests in flight, failed
    checks and responses, state, weight, maxconn (``max_requests``, 0: none); None if it does
    not answer."""
    try:
        text = runtime(sock, "show stat")
    except OSError:
        return None
    if not text.startswith("# "):
        return None
    rows = csv.DictReader(io.StringIO(text[2:]))
    out = []
    for row in rows:
        if row.get("pxname") != BACKEND or row.get("svname") in ("BACKEND", "FRONTEND"):
            continue
        out.append({"name": row["svname"], "address": row.get("addr"),
                    "num_requests": int(row.get("scur") or 0),
                    "fails": int(row.get("chkfail") or 0) + int(row.get("eresp") or 0),
                    "status": row.get("status"), "weight": int(row.get("weight") or 0),
                    "retries": int(row.get("wretr") or 0),
                    "redispatches": int(row.get("wredis") or 0),
                    "responses_5xx": int(row.get("hrsp_5xx") or 0),
                    "max_requests": int(row.get("slim") or 0)})
    return out


class HaproxyBalancer:
    """An HAProxy process on ``127.0.0.1:port`` (a
    :class:`~langchain_ha.cluster.balancer.LoadBalancer`)."""

    kind = "haproxy"

    def __init__(self, spec: Balancer, port: int, state_dir: Path, *,
                 server_timeout_s: float = 65.0, retries: int | None = None) -> None:
        if spec.tls:
            haproxy_config(spec, port, Path("/"), (), server_timeout_s=1)  # raises, naming tls
        self.spec = spec
        self.port = port
        self.dir = state_dir / "haproxy"
        self.admin_socket = admin_socket(self.dir, "stats.sock")
        self.server_timeout_s = server_timeout_s
        self.retries = retries
        self.upstreams: tuple[Upstream, ...] = ()

    @property
    def marker(self) -> str:
        return str(self.dir / "haproxy.cfg")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        """True when the runtime API answers on its socket."""
        return stats_view(self.admin_socket) is not None

    def start(self, upstreams: Sequence[Upstream], timeout: float = 20.0) -> Child:
        """Start HAProxy with a server per slot in ``upstreams``; returns the child."""
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError("haproxy not found on PATH: apt-get install haproxy, or set "
                                    "balancer.kind: caddy")
        private_dir(self.dir)
        private_socket_dir(self.admin_socket)
        self.upstreams = tuple(upstreams)
        config = Path(self.marker)
        write_private(config, haproxy_config(self.spec, self.port, self.admin_socket,
                                             self.upstreams,
                                             server_timeout_s=self.server_timeout_s,
                                             retries=self.retries))
        child = Child([binary, "-db", "-f", str(config)], name="haproxy",
                      log_path=self.dir / "haproxy.log")
        deadline = time.monotonic() + timeout
        while not self.answers():
            if not child.alive() or time.monotonic() > deadline:
                child.stop()
                raise RuntimeError(f"haproxy did not answer on {self.admin_socket}"
                                   f"{child.tail()}")
            time.sleep(0.05)
        return child

    def apply(self, upstreams: Sequence[Upstream]) -> None:
        """Set the weights, occupancy and ``max_requests`` of ``upstreams`` through the runtime
        API (no reload).  The slots (ports, standbys) are fixed while HAProxy runs; a different
        list is refused."""
        wanted = tuple(upstreams)
        if wanted == self.upstreams:
            return
        if [(u.dial, u.standby) for u in wanted] != [(u.dial, u.standby)
                                                      for u in self.upstreams]:
            raise RuntimeError("haproxy: the balancer slots (ports, standbys) changed; they are "
                               "fixed while it runs (restart the deployment)")
        commands = []
        for i, (u, old) in enumerate(zip(wanted, self.upstreams, strict=True)):
            server = f"{BACKEND}/{server_name(i)}"
            if u.weight != old.weight:
                commands.append(f"set server {server} weight {min(MAX_WEIGHT, u.weight)}")
            if u.occupied != old.occupied:
                commands.append(f"set server {server} state {'ready' if u.occupied else 'maint'}")
            if u.max_requests != old.max_requests and u.max_requests:
                commands.append(f"set maxconn server {server} {u.max_requests}")
        answer = runtime(self.admin_socket, "; ".join(commands))
        if answer.strip():  # it answers nothing on success
            raise RuntimeError(f"haproxy refused the change: {answer.strip()[:300]}")
        self.upstreams = wanted

    def view(self) -> list[dict[str, Any]]:
        """HAProxy's own view of its servers (see :func:`stats_view`)."""
        return stats_view(self.admin_socket) or []

    def record(self, pid: int | None) -> BalancerRecord:
        """Its entry in the state file (``pid``: HAProxy's)."""
        return BalancerRecord(pid=pid, kind=self.kind, marker=self.marker, port=self.port,
                              admin_socket=str(self.admin_socket), url=self.url,
                              upstreams=[vars(u) for u in self.upstreams])

    def cleanup(self) -> None:
        """After HAProxy stopped: remove its socket (and the directory made for it, if it is
        not in ours)."""
        remove_socket(self.admin_socket, self.dir)
