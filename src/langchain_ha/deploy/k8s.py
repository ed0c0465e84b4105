"""Kubernetes manifests for a topology: the replica Deployment, PDB and HPA, the provider
simulators (demo topologies only) and the CloudNativePG database; what reaches the replicas
(Service, Ingress, NetworkPolicies) is in :mod:`langchain_ha.deploy.network`.

Every builder is a pure function of the :class:`~langchain_ha.cluster.topology.Topology` and
the :class:`RenderOptions`; it returns plain dicts that :mod:`langchain_ha.deploy.render`
writes as YAML.  No builder ever puts a secret value in a manifest: secrets are referenced by
name (``secretKeyRef``) and described in ``secret.example.yaml``.

The database is reached over TLS verified against the CloudNativePG CA (``verify-full``,
SECURITY.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from langchain_ha.cluster.replicas import drain_grace_s
from langchain_ha.cluster.topology import ProviderSpec, Topology

Obj = dict[str, Any]

PORT = 8000
SIM_PORT = 8900
UID = 10001
PRESTOP_SLEEP_S = 5  # endpoint removal reaching kube-proxy and the ingress controller
SHUTDOWN_MARGIN_S = 5
ZONE_KEY = "topology.kubernetes.io/zone"
HOST_KEY = "kubernetes.io/hostname"
PG_IMAGE = "ghcr.io/cloudnative-pg/postgresql:17-standard-bookworm"  # ships pgvector
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
DB_NAME = "lcha"
DB_OWNER = "lcha"
REPLICA_RESOURCES: Obj = {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"cpu": "2", "memory": "1Gi"}}
SIM_RESOURCES: Obj = {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "1", "memory": "256Mi"}}
DB_RESOURCES: Obj = {"requests": {"cpu": "500m", "memory": "1Gi"},
                     "limits": {"memory": "2Gi"}}
HPA_CPU_UTILIZATION = 70
CONTAINER_SECURITY: Obj = {
    "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"}}
POD_SECURITY: Obj = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                     "seccompProfile": {"type": "RuntimeDefault"}}
TMP_VOLUME: Obj = {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
TMP_MOUNT: Obj = {"name": "tmp", "mountPath": "/tmp"}
DB_CA_DIR = "/etc/lcha/db-ca"


@dataclass(frozen=True)
class RenderOptions:
    """What the topology does not say: the replica image, the namespace, and the namespaces
    of the ingress controller and of Prometheus (the replicas' only callers)."""

    image: str
    namespace: str
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str = "monitoring"


def secret_name(topo: Topology) -> str:
    """The Secret holding the API key hashes, the admin token and real providers' keys."""
    return f"{topo.name}-secrets"


def db_cluster_name(topo: Topology) -> str:
    """The CloudNativePG Cluster (its services are ``<name>-rw`` and ``<name>-ro``)."""
    return f"{topo.name}-db"


def db_app_secret(topo: Topology) -> str:
    """The basic-auth Secret of the application role (``username``/``password``)."""
    return f"{db_cluster_name(topo)}-app"


def db_ca_secret(topo: Topology) -> str:
    """The Secret where CloudNativePG keeps its server CA (only ``ca.crt`` is mounted)."""
    return f"{db_cluster_name(topo)}-ca"


def backup_secret(topo: Topology) -> str:
    """The Secret with the object store credentials of the base backups and WAL archive."""
    return f"{db_cluster_name(topo)}-backup-s3"


def sim_name(topo: Topology, spec: ProviderSpec) -> str:
    """The Deployment/Service name of a simulated provider."""
    return f"{topo.name}-sim-{spec.name.replace('_', '-')}"


def selector(topo: Topology, component: str = "replica") -> dict[str, str]:
    """The immutable label selector of one component."""
    return {"app.kubernetes.io/name": "langchain-ha", "app.kubernetes.io/instance": topo.name,
            "app.kubernetes.io/component": component}


def labels(topo: Topology, component: str = "replica") -> dict[str, str]:
    """The selector labels plus the descriptive ones."""
    return {**selector(topo, component), "app.kubernetes.io/part-of": "langchain-ha",
            "app.kubernetes.io/managed-by": "lcha-render"}


def meta(topo: Topology, opts: RenderOptions, name: str, component: str = "replica") -> Obj:
    """``metadata`` of a namespaced object."""
    return {"name": name, "namespace": opts.namespace, "labels": labels(topo, component)}


def whole_seconds(value: float) -> int:
    """``value`` seconds rounded up, at least 1 (what Kubernetes fields in seconds take)."""
    return max(1, math.ceil(value))


def _num(value: float) -> str:
    """``8.0`` → ``"8"``, ``2.5`` → ``"2.5"`` (env values and quantities)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> Obj:
    ref: Obj = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def namespace(topo: Topology, opts: RenderOptions) -> Obj:
    """The namespace: Pod Security ``baseline`` enforced, ``restricted`` warned and audited
    (the replicas meet ``restricted``; operator-made pods such as CloudNativePG's and its
    plugins' sidecars are not ours to vouch for)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": opts.namespace, "labels": {
                **labels(topo, "namespace"),
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted"}}}


def termination_grace_s(topo: Topology) -> int:
    """preStop sleep + the replica's drain grace + its drain timeout + a margin."""
    return math.ceil(PRESTOP_SLEEP_S + drain_grace_s(topo) + topo.replicas.drain_timeout_s
                     + SHUTDOWN_MARGIN_S)


def db_conninfo(topo: Topology, service: str) -> str:
    """libpq conninfo of a CloudNativePG service; the password comes from ``PGPASSWORD``."""
    return (f"host={db_cluster_name(topo)}-{service} port=5432 dbname={DB_NAME} "
            f"user={DB_OWNER}")


def sim_url(topo: Topology, spec: ProviderSpec) -> str:
    """A simulated provider's root URL inside the cluster (its Service)."""
    return f"http://{sim_name(topo, spec)}:{SIM_PORT}"


def replica_env(topo: Topology) -> list[Obj]:
    """The replica's ``LCHA_*`` settings; secrets only as ``secretKeyRef``."""
    spec = topo.replicas
    env: list[Obj] = [
        {"name": "LCHA_ZONE", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{ZONE_KEY}']"}}},
        {"name": "LCHA_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LCHA_MAX_INFLIGHT", "value": str(spec.max_inflight)},
        {"name": "LCHA_DRAIN_GRACE_S", "value": _num(drain_grace_s(topo))},
        {"name": "LCHA_DRAIN_TIMEOUT_S", "value": _num(spec.drain_timeout_s)},
        {"name": "LCHA_REQUEST_TIMEOUT_S", "value": _num(spec.request_timeout_s)},
        _secret_env("LCHA_API_KEY_HASHES", secret_name(topo), "api-key-hashes"),
        _secret_env("LCHA_ADMIN_TOKEN", secret_name(topo), "admin-token", optional=True),
    ]
    # The database's variables are set below, beside their TLS settings.
    app = topo.app_environment(lambda p: sim_url(topo, p))
    env += [{"name": k, "value": v} for k, v in app.to_env().items()]
    # Each real provider's key under the variable its entry names, from the deployment's secret.
    keys = dict.fromkeys(str(p.api_key_env) for p in topo.providers if not p.simulated)
    env += [_secret_env(name, secret_name(topo), name) for name in keys]
    if topo.database.enabled:
        env += [{"name": "LCHA_DB_WRITER", "value": db_conninfo(topo, "rw")},
                {"name": "LCHA_DB_READER", "value": db_conninfo(topo, "ro")},
                _secret_env("PGPASSWORD", db_app_secret(topo), "password"),
                # The server's certificate names the service we dial (<cluster>-rw/-ro).
                {"name": "PGSSLMODE", "value": "verify-full"},
                {"name": "PGSSLROOTCERT", "value": f"{DB_CA_DIR}/ca.crt"}]
    return env


def probes(topo: Topology) -> Obj:
    """Readiness from the balancer's checks; liveness from ``liveness_failures``."""
    checks = topo.balancer.checks
    http = {"port": "http", "scheme": "HTTP"}
    return {
        "startupProbe": {"httpGet": {"path": "/livez", **http}, "periodSeconds": 2,
                         "timeoutSeconds": whole_seconds(checks.timeout_s), "failureThreshold": 60},
        "readinessProbe": {"httpGet": {"path": checks.path, **http},
                           "periodSeconds": whole_seconds(checks.interval_s),
                           "timeoutSeconds": whole_seconds(checks.timeout_s),
                           "failureThreshold": checks.unhealthy_threshold,
                           "successThreshold": checks.healthy_threshold},
        "livenessProbe": {"httpGet": {"path": "/livez", **http},
                          "periodSeconds": max(5, whole_seconds(checks.interval_s)),
                          "timeoutSeconds": whole_seconds(checks.timeout_s),
                          "failureThreshold": topo.replicas.liveness_failures,
                          "successThreshold": 1},
    }


def spread(topo: Topology, component: str = "replica") -> list[Obj]:
    """Hard spread over zones (max skew 1), soft spread over nodes."""
    sel = {"matchLabels": selector(topo, component)}
    return [
        {"maxSkew": 1, "topologyKey": ZONE_KEY, "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": sel, "matchLabelKeys": ["pod-template-hash"],
         "nodeTaintsPolicy": "Honor"},
        {"maxSkew": 1, "topologyKey": HOST_KEY, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": sel, "matchLabelKeys": ["pod-template-hash"]},
    ]


def deployment(topo: Topology, opts: RenderOptions) -> Obj:
    """The replica server: ``replicas.per_zone`` per zone, spread, probed, drained, locked down."""
    container: Obj = {
        "name": "replica", "image": opts.image, "imagePullPolicy": "IfNotPresent",
        "command": ["lcha"],
        "args": ["serve", topo.app, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": replica_env(topo),
        **probes(topo),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "resources": REPLICA_RESOURCES,
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [TMP_MOUNT],
    }
    volumes: list[Obj] = [TMP_VOLUME]
    if topo.database.enabled:
        container["volumeMounts"] = [TMP_MOUNT, {"name": "db-ca", "mountPath": DB_CA_DIR,
                                                 "readOnly": True}]
        # The CA certificate alone: the Secret also holds the CA's private key.
        volumes.append({"name": "db-ca", "secret": {
            "secretName": db_ca_secret(topo), "defaultMode": 0o440,
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(topo, opts, topo.name),
        "spec": {
            "replicas": topo.replicas.per_zone * len(topo.zones),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(topo)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(topo),
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": termination_grace_s(topo),
                    "securityContext": POD_SECURITY,
                    "topologySpreadConstraints": spread(topo),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def pdb(topo: Topology, opts: RenderOptions) -> Obj:
    """At most one replica down by voluntary disruption (so at most one per zone)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(topo, opts, topo.name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(topo)},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def hpa(topo: Topology, opts: RenderOptions) -> Obj:
    """CPU and mean in-flight requests (``lcha_inflight_requests``), bounds per zone x zones."""
    spec, zones = topo.replicas, len(topo.zones)
    inflight = {"type": "AverageValue", "averageValue": _num(spec.scale_up_inflight)}
    cpu = {"type": "Utilization", "averageUtilization": HPA_CPU_UTILIZATION}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": meta(topo, opts, topo.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": topo.name},
            "minReplicas": spec.min_per_zone * zones,
            "maxReplicas": spec.max_per_zone * zones,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": cpu}},
                {"type": "Pods", "pods": {"metric": {"name": "lcha_inflight_requests"},
                                          "target": inflight}},
            ],
            "behavior": {  # up: one replica per zone a minute; down: one a minute, after 5 min
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Pods", "value": zones, "periodSeconds": 60}]},
                "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min",
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
            },
        },
    }


def simulators(topo: Topology, opts: RenderOptions) -> list[Obj]:
    """A Deployment + Service per simulated provider (demo topologies; real ones have none)."""
    out: list[Obj] = []
    for spec in (p for p in topo.providers if p.simulated):
        name, component = sim_name(topo, spec), f"simulator-{spec.name.replace('_', '-')}"
        http = {"port": "http", "scheme": "HTTP", "path": "/v1/models"}
        container: Obj = {
            "name": "simulator", "image": opts.image, "imagePullPolicy": "IfNotPresent",
            "command": ["lcha"],
            "args": ["sim", "--host", "0.0.0.0", "--port", str(SIM_PORT), "--name", spec.name,
                     "--latency-ms", _num(spec.latency_ms), "--jitter-ms", _num(spec.jitter_ms)],
            "ports": [{"name": "http", "containerPort": SIM_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": http, "periodSeconds": 5, "timeoutSeconds": 2},
            "livenessProbe": {"httpGet": http, "periodSeconds": 10, "timeoutSeconds": 2,
                              "failureThreshold": 3},
            "resources": SIM_RESOURCES, "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [TMP_MOUNT],
        }
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(topo, opts, name, component),
            "spec": {"replicas": 1, "selector": {"matchLabels": selector(topo, component)},
                     "template": {"metadata": {"labels": labels(topo, component)}, "spec": {
                         "automountServiceAccountToken": False, "enableServiceLinks": False,
                         "securityContext": POD_SECURITY, "containers": [container],
                         "volumes": [TMP_VOLUME]}}}})
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": meta(topo, opts, name, component),
                    "spec": {"type": "ClusterIP", "selector": selector(topo, component),
                             "ports": [{"name": "http", "port": SIM_PORT, "targetPort": "http",
                                        "protocol": "TCP"}]}})
    return out


def postgres(topo: Topology, opts: RenderOptions) -> list[Obj]:
    """CloudNativePG Cluster (one instance per zone) + its Barman Cloud object store + a daily
    backup.  ``replication`` sync/strict → quorum sync commit on one standby."""
    name = db_cluster_name(topo)
    pg: Obj = {"parameters": {"max_connections": "200", "shared_buffers": "256MB",
                              "wal_keep_size": "1GB"}}
    if topo.database.replication != "async":
        pg["synchronous"] = {"method": "any", "number": 1, "dataDurability": (
            "required" if topo.database.replication == "strict" else "preferred")}
    cluster: Obj = {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": meta(topo, opts, name, "database"),
        "spec": {
            "instances": len(topo.zones),
            "imageName": PG_IMAGE,
            "primaryUpdateStrategy": "unsupervised",
            "postgresql": pg,
            "bootstrap": {"initdb": {
                "database": DB_NAME, "owner": DB_OWNER,
                "secret": {"name": db_app_secret(topo)},
                "postInitApplicationSQL": ["CREATE EXTENSION IF NOT EXISTS vector"]}},
            "storage": {"size": "20Gi"},
            "walStorage": {"size": "10Gi"},
            "resources": DB_RESOURCES,
            "affinity": {"enablePodAntiAffinity": True, "topologyKey": ZONE_KEY,
                         "podAntiAffinityType": "required"},
            "plugins": [{"name": BARMAN_PLUGIN, "isWALArchiver": True,
                         "parameters": {"barmanObjectName": f"{name}-store"}}],
        },
    }
    creds = backup_secret(topo)
    store: Obj = {
        "apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
        "metadata": meta(topo, opts, f"{name}-store", "database"),
        "spec": {
            "retentionPolicy": "30d",
            "configuration": {
                "destinationPath": f"s3://CHANGE-ME-bucket/{topo.name}/{name}",
                "s3Credentials": {
                    "accessKeyId": {"name": creds, "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": creds, "key": "ACCESS_SECRET_KEY"}},
                "wal": {"compression": "gzip", "maxParallel": 2},
                "data": {"compression": "gzip"},
            },
        },
    }
    backup: Obj = {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
        "metadata": meta(topo, opts, f"{name}-daily", "database"),
        "spec": {"schedule": "0 0 3 * * *", "backupOwnerReference": "self",
                 "cluster": {"name": name}, "method": "plugin",
                 "pluginConfiguration": {"name": BARMAN_PLUGIN}, "immediate": True},
    }
    return [cluster, store, backup]
