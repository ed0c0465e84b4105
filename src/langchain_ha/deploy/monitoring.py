"""Alerts, scrape configuration and the Grafana dashboard of a deployment.

The same alert list feeds the Kubernetes ``PrometheusRule`` and the plain Prometheus rule file
of ``lcha render prometheus``; alerts on Kubernetes or CloudNativePG metrics (kube-state-metrics
``kube_*``, ``cnpg_*``) exist only in the former.  Every expression selects the replicas by
``job="<topology name>"``: the ServiceMonitor's job is the Service name, and the local
``prometheus.yml`` uses the same job name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_ha.cluster.topology import Topology
from langchain_ha.deploy.k8s import (
    Obj,
    RenderOptions,
    db_cluster_name,
    labels,
    meta,
    selector,
)

ERROR_RATIO = 0.05
P99_SECONDS = 2.5
DEGRADED_RATIO = 0.10
REPLICATION_LAG_S = 10
BACKUP_METRIC = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
API_ROUTES = '/v1/.*'
ANSWER_ROUTES = '/v1/(invoke|batch|chat/completions)'  # streams last as long as the answer


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``k8s_only`` ones read kube-state-metrics or CloudNativePG."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    k8s_only: bool = False

    def rule(self) -> Obj:
        """The rule as Prometheus (and the PrometheusRule CRD) spell it."""
        return {"alert": self.name, "expr": self.expr, "for": self.for_,
                "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "description": self.description}}


def _app_alerts(topo: Topology) -> list[Alert]:
    job = f'job="{topo.name}"'
    api = f'{job}, route=~"{API_ROUTES}"'
    return [
        Alert("LchaHighErrorRate",
              f'sum(rate(lcha_http_requests_total{{{api}, status=~"5.."}}[5m]))\n'
              f"  / sum(rate(lcha_http_requests_total{{{api}}}[5m])) > {ERROR_RATIO}",
              "5m", "critical", f"More than {ERROR_RATIO:.0%} of API requests fail with 5xx",
              "{{ $value | humanizePercentage }} of /v1 requests answered 5xx over 5 minutes "
              "(503 overloaded included: check lcha_admission_rejected_total)."),
        Alert("LchaHighLatencyP99",
              "histogram_quantile(0.99, sum by (le) (rate(lcha_http_request_seconds_bucket"
              f'{{{job}, route=~"{ANSWER_ROUTES}"}}[5m]))) > {P99_SECONDS}',
              "10m", "warning", f"API p99 latency above {P99_SECONDS}s",
              "p99 of non-streaming answers is {{ $value | humanizeDuration }}."),
        Alert("LchaBreakerOpen",
              f"max by (provider) (lcha_breaker_state{{{job}}}) == 2",
              "1m", "warning", "Circuit breaker of provider {{ $labels.provider }} is open",
              "Requests skip {{ $labels.provider }} and go to the fallback provider."),
        Alert("LchaAllBreakersOpen",
              f"min(max by (provider) (lcha_breaker_state{{{job}}})) == 2",
              "1m", "critical", "Every provider's circuit breaker is open",
              "No LLM provider is taking calls: answers are degraded (local fallback)."),
        Alert("LchaDegradedAnswers",
              f"sum(rate(lcha_degraded_answers_total{{{job}}}[10m]))\n"
              f"  / sum(rate(lcha_http_requests_total{{{api}}}[10m])) > {DEGRADED_RATIO}",
              "10m", "warning", f"More than {DEGRADED_RATIO:.0%} of answers are degraded",
              "Degraded components per answer: {{ $value | humanizePercentage }}; "
              "see lcha_degraded_answers_total by component."),
        Alert("LchaAdmissionRejecting",
              f"sum(rate(lcha_admission_rejected_total{{{job}}}[5m])) > 0",
              "10m", "warning", "Replicas shed load at their in-flight limit",
              "Capacity is short: scale out (HPA max, or lcha scale) or raise max_inflight."),
        Alert("LchaReplicaDown", f"up{{{job}}} == 0", "1m", "warning",
              "Replica {{ $labels.instance }} does not answer /metrics",
              "The scrape of {{ $labels.instance }} failed for a minute."),
    ]


def _k8s_alerts(topo: Topology, opts: RenderOptions) -> list[Alert]:
    ns = f'namespace="{opts.namespace}"'
    deploy = f'{ns}, deployment="{topo.name}"'
    out = [
        Alert("LchaReplicasUnavailable",
              f"kube_deployment_status_replicas_unavailable{{{deploy}}} > 0",
              "5m", "warning", "{{ $value }} replica(s) of the Deployment are unavailable",
              "Pods are not ready; zone spread is DoNotSchedule, so a lost zone leaves "
              "Pending pods until capacity appears elsewhere.", k8s_only=True),
        Alert("LchaNoReplicaAvailable",
              f"kube_deployment_status_replicas_available{{{deploy}}} == 0",
              "1m", "critical", "No replica of the Deployment is available",
              "The service is down.", k8s_only=True),
        Alert("LchaAutoscalerAtMax",
              f'kube_horizontalpodautoscaler_status_current_replicas{{{ns}, '
              f'horizontalpodautoscaler="{topo.name}"}}\n'
              f'  >= kube_horizontalpodautoscaler_spec_max_replicas{{{ns}, '
              f'horizontalpodautoscaler="{topo.name}"}}',
              "15m", "warning", "The autoscaler is at maxReplicas",
              "Raise replicas.max_per_zone or add capacity.", k8s_only=True),
    ]
    if not topo.database.enabled:
        return out
    pods = f'{ns}, pod=~"{db_cluster_name(topo)}-[0-9]+"'
    primary = f"on (namespace, pod) (cnpg_pg_replication_in_recovery{{{pods}}} == 0)"
    if topo.database.replication == "async":
        no_standby = Alert(
            "LchaDbNoStandby",
            f"(cnpg_pg_replication_streaming_replicas{{{pods}}} < 1)\n  and {primary}",
            "2m", "critical", "The primary has no streaming standby",
            "A primary loss now loses data and has no failover target.", k8s_only=True)
    else:
        no_standby = Alert(
            "LchaDbNoSyncStandby",
            f'(cnpg_collector_sync_replicas{{{pods}, value="observed"}} < 1)\n  and {primary}',
            "1m", "critical", "The primary has no synchronous standby",
            "Commits are not confirmed by a standby ("
            + ("they block: dataDurability required" if topo.database.replication == "strict"
               else "dataDurability preferred: they go on unprotected") + ").", k8s_only=True)
    return [*out, no_standby,
            Alert("LchaDbReplicationLag",
                  f"max by (pod) (cnpg_pg_replication_lag{{{pods}}}) > {REPLICATION_LAG_S}",
                  "2m", "warning", "Standby {{ $labels.pod }} lags the primary",
                  "Replay lag is {{ $value }}s (sync standbys should be near 0).",
                  k8s_only=True),
            Alert("LchaDbFailover",
                  f"max(changes(cnpg_pg_replication_in_recovery{{{pods}}}[10m])) > 0",
                  "0m", "warning", "A PostgreSQL instance changed role (failover/switchover)",
                  "An instance was promoted or demoted in the last 10 minutes; check "
                  "kubectl cnpg status and the timeline.", k8s_only=True),
            Alert("LchaDbInstanceRestarted",
                  f"max by (pod) (changes(cnpg_pg_postmaster_start_time{{{pods}}}[10m])) > 0",
                  "0m", "info", "PostgreSQL on {{ $labels.pod }} restarted",
                  "The postmaster start time changed in the last 10 minutes.", k8s_only=True),
            Alert("LchaDbBackupTooOld",
                  f"time() - max({BACKUP_METRIC}{{{pods}}}) > 2 * 86400\n"
                  f"  or absent({BACKUP_METRIC}{{{pods}}})",
                  "1h", "warning", "No base backup in two days (or no backup metric at all)",
                  "Check the ScheduledBackup, the Barman Cloud plugin and the object store "
                  "credentials.", k8s_only=True)]


def alerts(topo: Topology, opts: RenderOptions | None = None) -> list[Alert]:
    """Application alerts, plus the Kubernetes/CloudNativePG ones when ``opts`` is given."""
    return _app_alerts(topo) + (_k8s_alerts(topo, opts) if opts is not None else [])


def rule_groups(topo: Topology, opts: RenderOptions | None = None) -> list[Obj]:
    """The ``groups:`` of a rule file: application, then database/kubernetes."""
    found = alerts(topo, opts)
    groups = [{"name": f"{topo.name}.app", "rules": [a.rule() for a in found
                                                     if not a.k8s_only]}]
    k8s = [a.rule() for a in found if a.k8s_only]
    if k8s:
        groups.append({"name": f"{topo.name}.platform", "rules": k8s})
    return groups


def prometheus_rule(topo: Topology, opts: RenderOptions) -> Obj:
    """The monitoring.coreos.com/v1 PrometheusRule with every alert."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": meta(topo, opts, topo.name, "monitoring"),
            "spec": {"groups": rule_groups(topo, opts)}}


def monitors(topo: Topology, opts: RenderOptions) -> list[Obj]:
    """ServiceMonitor of the replicas, PodMonitor of the CloudNativePG instances."""
    out: list[Obj] = [{
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": meta(topo, opts, topo.name, "monitoring"),
        "spec": {"selector": {"matchLabels": selector(topo)},
                 "namespaceSelector": {"matchNames": [opts.namespace]},
                 "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s",
                                "scrapeTimeout": "10s"}]}}]
    if topo.database.enabled:
        name = db_cluster_name(topo)
        out.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": meta(topo, opts, name, "monitoring"),
            "spec": {"selector": {"matchLabels": {"cnpg.io/cluster": name}},
                     "namespaceSelector": {"matchNames": [opts.namespace]},
                     "podMetricsEndpoints": [{"port": "metrics", "interval": "15s"}]}})
    return out


def _panel(pid: int, title: str, exprs: list[tuple[str, str]], unit: str,
           x: int, y: int) -> Obj:
    return {
        "id": pid, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, (expr, legend) in enumerate(exprs)],
    }


def dashboard(topo: Topology, opts: RenderOptions | None = None) -> Obj:
    """The Grafana dashboard (traffic, errors, latency, in-flight, breakers, degradation; the
    database panels when rendered for Kubernetes with a database)."""
    job = f'job="{topo.name}"'
    api = f'{job}, route=~"{API_ROUTES}"'
    rate = "[$__rate_interval]"
    specs: list[tuple[str, list[tuple[str, str]], str]] = [
        ("Requests by status", [(f"sum by (status) (rate(lcha_http_requests_total{{{api}}}"
                                 f"{rate}))", "{{status}}")], "reqps"),
        ("5xx ratio", [(f'sum(rate(lcha_http_requests_total{{{api}, status=~"5.."}}{rate})) / '
                        f"sum(rate(lcha_http_requests_total{{{api}}}{rate}))", "5xx")],
         "percentunit"),
        ("Latency (answers)", [
            (f"histogram_quantile({q}, sum by (le) (rate(lcha_http_request_seconds_bucket"
             f'{{{job}, route=~"{ANSWER_ROUTES}"}}{rate})))', f"p{round(q * 100)}")
            for q in (0.5, 0.95, 0.99)], "s"),
        ("In-flight per replica", [(f"lcha_inflight_requests{{{job}}}", "{{instance}}")],
         "short"),
        ("Breaker state (0 closed, 1 half-open, 2 open)",
         [(f"max by (provider) (lcha_breaker_state{{{job}}})", "{{provider}}")], "short"),
        ("LLM calls by provider and outcome",
         [(f"sum by (provider, outcome) (rate(lcha_llm_calls_total{{{job}}}{rate}))",
           "{{provider}} {{outcome}}")], "reqps"),
        ("Degraded answers by component",
         [(f"sum by (component) (rate(lcha_degraded_answers_total{{{job}}}{rate}))",
           "{{component}}")], "reqps"),
        ("Shed (admission) and draining replicas",
         [(f"sum(rate(lcha_admission_rejected_total{{{job}}}{rate}))", "shed/s"),
          (f"sum(lcha_draining{{{job}}})", "draining")], "short"),
    ]
    if opts is not None and topo.database.enabled:
        pods = f'namespace="{opts.namespace}", pod=~"{db_cluster_name(topo)}-[0-9]+"'
        specs += [
            ("DB replication lag", [(f"cnpg_pg_replication_lag{{{pods}}}", "{{pod}}")], "s"),
            ("DB roles (0 primary, 1 standby)",
             [(f"cnpg_pg_replication_in_recovery{{{pods}}}", "{{pod}}")], "short"),
        ]
    panels = [_panel(i + 1, title, exprs, unit, 12 * (i % 2), 8 * (i // 2))
              for i, (title, exprs, unit) in enumerate(specs)]
    return {
        "uid": f"lcha-{topo.name}"[:40], "title": f"langchain-ha: {topo.name}",
        "tags": ["langchain-ha"], "timezone": "browser", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Data source",
                                 "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json(topo: Topology, opts: RenderOptions | None = None) -> str:
    """The dashboard as the JSON text Grafana imports (stable key order, trailing newline)."""
    return json.dumps(dashboard(topo, opts), indent=2) + "\n"


def dashboard_configmap(topo: Topology, opts: RenderOptions) -> Obj:
    """The dashboard in a ConfigMap the Grafana sidecar picks up (``grafana_dashboard: "1"``)."""
    md = meta(topo, opts, f"{topo.name}-dashboard", "monitoring")
    md["labels"] = {**labels(topo, "monitoring"), "grafana_dashboard": "1"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md,
            "data": {f"{topo.name}-dashboard.json": dashboard_json(topo, opts)}}


def prometheus_config(topo: Topology) -> Obj:
    """A local ``prometheus.yml``: the replicas from ``targets.json`` (file_sd), the rules."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{
            "job_name": topo.name, "metrics_path": "/metrics", "scheme": "http",
            "file_sd_configs": [{"files": ["targets.json"], "refresh_interval": "10s"}],
        }],
    }


def example_targets(topo: Topology) -> list[dict[str, Any]]:
    """``targets.json`` before the first ``lcha status --json``: one group per zone, empty."""
    return [{"targets": [], "labels": {"zone": zone}} for zone in topo.zones]


__all__ = ["Alert", "alerts", "dashboard", "dashboard_configmap", "dashboard_json",
           "example_targets", "monitors", "prometheus_config", "prometheus_rule",
           "rule_groups"]
