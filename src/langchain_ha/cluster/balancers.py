"""Which load balancer a deployment runs: HAProxy where it is installed, else Caddy.

``balancer.kind`` in the topology (``auto``, ``haproxy``, ``caddy``) chooses; the
``LCHA_BALANCER`` environment variable overrides it (to compare both on one topology).  ``auto``
takes HAProxy when ``haproxy`` is on PATH and the topology does not ask for TLS, because only
HAProxy retries a replica's 503 on another replica (see :mod:`~langchain_ha.cluster.balancer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_ha._usage import UsageError
from langchain_ha.cluster.balancer import LoadBalancer
from langchain_ha.cluster.caddy import CaddyBalancer, upstreams_view
from langchain_ha.cluster.haproxy import HaproxyBalancer, haproxy_binary, stats_view
from langchain_ha.cluster.state import BalancerRecord
from langchain_ha.cluster.topology import Topology

KINDS = ("auto", "haproxy", "caddy")
ENV = "LCHA_BALANCER"


def balancer_kind(topology: Topology, env: dict[str, str] | None = None) -> str:
    """``haproxy`` or ``caddy`` for ``topology`` (see the module docstring)."""
    environ = os.environ if env is None else env
    wanted = environ.get(ENV) or topology.balancer.kind
    if wanted not in KINDS:
        raise UsageError(f"{ENV}={wanted!r}: must be one of {', '.join(KINDS)}")
    if wanted == "auto":
        return "haproxy" if haproxy_binary() and not topology.balancer.tls else "caddy"
    if wanted == "haproxy":
        if topology.balancer.tls:
            raise UsageError("balancer.tls: HAProxy here serves plain HTTP (Caddy issues the "
                             "certificates); set balancer.kind: caddy (or auto) for tls")
        if haproxy_binary() is None:
            raise UsageError("balancer.kind: haproxy, but haproxy is not installed "
                             "(apt-get install haproxy, or balancer.kind: caddy)")
    return wanted


def make_balancer(topology: Topology, port: int, state_dir: Path, kind: str | None = None
                  ) -> LoadBalancer:
    """The balancer of ``kind`` (by default :func:`balancer_kind`) for ``topology``."""
    chosen = kind or balancer_kind(topology)
    if chosen == "haproxy":
        # The replica's deadline and drain grace answer before HAProxy gives up on it.
        server_timeout = topology.replicas.request_timeout_s + 5.0
        # One try per replica the topology runs: each replica refusing is enough to say so.
        replicas = len(topology.zones) * topology.replicas.per_zone
        return HaproxyBalancer(topology.balancer, port, state_dir,
                               server_timeout_s=server_timeout, retries=max(1, replicas))
    return CaddyBalancer(topology.balancer, port, state_dir)


def live_view(entry: BalancerRecord) -> list[dict[str, Any]] | None:
    """The running balancer's view of its upstreams, from its state-file entry (None if its
    control socket does not answer)."""
    sock = entry.admin_socket
    if not sock:
        return None
    if entry.kind == "haproxy":
        return stats_view(Path(sock))
    return upstreams_view(Path(sock))
