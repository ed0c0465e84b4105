"""Choosing the balancer and HAProxy's config (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_ha._usage import UsageError
from langchain_ha.cluster.balancer import Upstream
from langchain_ha.cluster.balancers import balancer_kind, make_balancer
from langchain_ha.cluster.caddy import CaddyBalancer
from langchain_ha.cluster.haproxy import HaproxyBalancer, haproxy_binary, haproxy_config
from langchain_ha.cluster.topology import Balancer, Topology

needs_haproxy = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy not installed")
UPS = [Upstream(9001), Upstream(9002, weight=300), Upstream(9003, standby=True)]


def _config(**spec: object) -> str:
    return haproxy_config(Balancer.model_validate(spec), 8080, Path("/run/x/stats.sock"), UPS,
                          server_timeout_s=65)


def test_haproxy_retries_a_shed_503_on_another_server_with_the_body_buffered() -> None:
    cfg = _config()
    lines = [line.strip() for line in cfg.splitlines()]
    assert "retry-on conn-failure empty-response 503" in lines
    assert "option redispatch 1" in lines and "retries 2" in lines  # slots - 1
    assert "option http-buffer-request" in lines
    assert "bind 127.0.0.1:8080" in lines
    assert "stats socket /run/x/stats.sock mode 600 level admin" in lines
    assert ("http-request set-header Idempotency-Key lb-%[uuid()] "
            "unless { req.hdr(Idempotency-Key) -m found }") in lines
    assert "option httpchk GET /readyz" in lines
    assert "timeout http-request 10000ms" in lines and "timeout server 65000ms" in lines
    servers = [line for line in lines if line.startswith("server ")]
    assert servers[1].startswith("server s1 127.0.0.1:9002 weight 256 check inter 1000 rise 2")
    assert servers[2].endswith(" backup") and not servers[0].endswith(" backup")
    assert "maxconn" not in servers[0]  # the replica did not say its room: no cap
    capped = haproxy_config(Balancer(), 8080, Path("/x.sock"), [Upstream(9001, max_requests=40)],
                            server_timeout_s=65)
    assert " maxconn 40" in capped
    # every replica up at its room: HAProxy's own 503, before any replica is asked
    assert "if { nbsrv(replicas) gt 0 } { be_conn_free(replicas) eq 0 }" in cfg
    assert "retries 5" in _config(retries=5)
    assert "retries 3\n" in haproxy_config(Balancer(), 8080, Path("/x.sock"), UPS * 4,
                                           server_timeout_s=65, retries=3)


def test_haproxy_refuses_tls_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"balancer\.tls"):
        _config(tls=True)


def test_the_environment_overrides_the_topology_and_auto_prefers_haproxy() -> None:
    topo = Topology()
    assert balancer_kind(topo, {"LCHA_BALANCER": "caddy"}) == "caddy"
    assert balancer_kind(topo, {}) == ("haproxy" if haproxy_binary() else "caddy")
    tls = Topology.model_validate({"balancer": {"tls": True}})
    assert balancer_kind(tls, {}) == "caddy"
    with pytest.raises(UsageError, match=r"balancer\.tls"):
        balancer_kind(tls, {"LCHA_BALANCER": "haproxy"})
    with pytest.raises(UsageError, match="LCHA_BALANCER"):
        balancer_kind(topo, {"LCHA_BALANCER": "nginx"})


@needs_haproxy
def test_make_balancer_gives_haproxy_the_replicas_deadline(tmp_path: Path) -> None:
    topo = Topology.model_validate({"balancer": {"kind": "haproxy"},
                                    "replicas": {"request_timeout_s": 30}})
    lb = make_balancer(topo, 8080, tmp_path)
    assert isinstance(lb, HaproxyBalancer) and lb.server_timeout_s == 35
    assert lb.retries == 3  # three zones of one replica, not the 12 slots
    assert isinstance(make_balancer(topo, 8080, tmp_path, "caddy"), CaddyBalancer)
