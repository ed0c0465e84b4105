"""What reaches the replicas and what they reach, in Kubernetes: the Service, an Ingress of the
API paths alone, and NetworkPolicies (SECURITY.md).

The Ingress routes ``/v1`` only (``/metrics``, ``/admin/*``, ``/openapi.json`` and the probes
stay inside the cluster).  Replicas take connections from the ingress controller's and the
monitoring namespace only, and open them to DNS, the database, the simulators (demo topologies)
and the real providers' ports on public addresses only.  Pure functions of the topology and
the :class:`~langchain_ha.deploy.k8s.RenderOptions`, like every builder.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from langchain_ha.cluster.topology import Topology
from langchain_ha.deploy.k8s import (
    SIM_PORT,
    Obj,
    RenderOptions,
    db_cluster_name,
    meta,
    selector,
    sim_name,
    whole_seconds,
)

API_PREFIX = "/v1"
NAMESPACE_KEY = "kubernetes.io/metadata.name"
# Egress to providers: anywhere but the cluster-private, link-local (cloud metadata) and
# carrier-grade NAT ranges.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                  "100.64.0.0/10")


def service(topo: Topology, opts: RenderOptions) -> Obj:
    """ClusterIP Service in front of the ready replicas (port 80 → ``http``)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(topo, opts, topo.name),
            "spec": {"type": "ClusterIP", "selector": selector(topo),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                "protocol": "TCP"}]}}


def api_paths(topo: Topology) -> list[Obj]:
    """The Ingress paths: the API (``/v1``) alone."""
    backend = {"service": {"name": topo.name, "port": {"name": "http"}}}
    return [{"path": API_PREFIX, "pathType": "Prefix", "backend": backend}]


def ingress(topo: Topology, opts: RenderOptions) -> Obj:
    """networking.k8s.io/v1 Ingress of the API paths only (no host: the production overlay
    sets host and TLS)."""
    timeout = str(whole_seconds(topo.replicas.request_timeout_s))
    md = meta(topo, opts, topo.name)
    md["annotations"] = {  # ingress-nginx; other controllers ignore them
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",  # SSE streams
        "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
    }
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": md,
            "spec": {"rules": [{"http": {"paths": api_paths(topo)}}]}}


def _from_namespace(name: str) -> Obj:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_KEY: name}}}


def provider_ports(topo: Topology) -> list[int]:
    """The TCP ports of the real providers' base URLs (443 for https, 80 for http)."""
    ports = set()
    for p in topo.providers:
        if not p.simulated:
            # No base_url: the kind's public endpoint (or the SDK's own), all on https.
            url = urlsplit(str(p.base_url or "https://"))
            ports.add(url.port or (443 if url.scheme == "https" else 80))
    return sorted(ports)


def network_policies(topo: Topology, opts: RenderOptions) -> list[Obj]:
    """Replicas: in from the ingress controller and Prometheus only; out to DNS, the database
    and the providers only.  Simulators (demo topologies): in from the replicas only."""
    http = [{"port": "http", "protocol": "TCP"}]
    egress: list[Obj] = [{
        "to": [{**_from_namespace("kube-system"),
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]
    if topo.database.enabled:
        egress.append({"to": [{"podSelector": {"matchLabels": {
            "cnpg.io/cluster": db_cluster_name(topo)}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}]})
    sims = [p for p in topo.providers if p.simulated]
    if sims:
        egress.append({"to": [{"podSelector": {"matchLabels": selector(
            topo, f"simulator-{p.name.replace('_', '-')}")}} for p in sims],
            "ports": [{"port": SIM_PORT, "protocol": "TCP"}]})
    ports = provider_ports(topo)
    if ports:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}}],
                       "ports": [{"port": port, "protocol": "TCP"} for port in ports]})
    out = [{
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta(topo, opts, topo.name),
        "spec": {"podSelector": {"matchLabels": selector(topo)},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": [_from_namespace(opts.ingress_namespace)], "ports": http},
                             {"from": [_from_namespace(opts.monitoring_namespace)],
                              "ports": http}],
                 "egress": egress}}]
    for p in sims:
        component = f"simulator-{p.name.replace('_', '-')}"
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(topo, opts, sim_name(topo, p), component),
            "spec": {"podSelector": {"matchLabels": selector(topo, component)},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": selector(topo)}}],
                                  "ports": http}],
                     "egress": []}})
    return out
