"""``lcha render k8s`` / ``lcha render prometheus``: manifests, alerts, dashboard, CLI errors.

Fast and offline: renders into ``tmp_path``, parses everything, compares with the checked-in
golden files (``LCHA_UPDATE_GOLDEN=1`` rewrites them), validates core kinds against the
Kubernetes 1.30 schemas (kubernetes-validate) and PromQL with promql-parser when installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from langchain_ha._usage import UsageError
from langchain_ha.cluster.replicas import drain_grace_s
from langchain_ha.cluster.topology import Topology, load_topology
from langchain_ha.deploy import k8s
from langchain_ha.deploy.render import (
    DOCKERFILE,
    MARKER,
    add_render,
    render_k8s,
    render_prometheus,
    split_image,
)

GOLDEN = Path(__file__).parent / "golden" / "k8s"
IMAGE = "registry.example.com/langchain-ha:golden"
CORE_KINDS = {"Namespace", "Deployment", "Service", "Ingress", "PodDisruptionBudget",
              "HorizontalPodAutoscaler", "ConfigMap", "NetworkPolicy"}
CRD_KINDS = {"Cluster", "ObjectStore", "ScheduledBackup", "ServiceMonitor", "PodMonitor",
             "PrometheusRule"}
SEVERITIES = {"info", "warning", "critical"}
DURATION = re.compile(r"^\d+[smhd]$")
Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_topology_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LCHA_UP__"):
            monkeypatch.delenv(name)


def topo_from(tmp_path: Path, text: str) -> Topology:
    path = tmp_path / "lcha.yaml"
    path.write_text(text)
    return load_topology(path)


def objects(root: Path) -> list[Obj]:
    """Every Kubernetes object under ``root`` (kustomizations and the example excluded)."""
    out: list[Obj] = []
    for path in sorted(root.rglob("*.yaml")):
        if path.name in ("kustomization.yaml", "secret.example.yaml", "ingress-patch.yaml"):
            continue
        out += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def env_of(deploy: Obj) -> dict[str, Obj]:
    [container, *_] = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container.get("env", [])}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lcha")
    add_render(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    out = tmp_path / "k8s"
    render_k8s(Topology(), out, kustomize=True, image=IMAGE)
    return out


def test_every_yaml_parses_and_kustomization_lists_the_manifests(demo: Path) -> None:
    base = demo / "base"
    for path in demo.rglob("*.yaml"):
        assert path.read_text().startswith(MARKER), path
        list(yaml.safe_load_all(path.read_text()))
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    manifests = sorted(p.name for p in base.glob("*.yaml")
                       if p.name not in ("kustomization.yaml", "secret.example.yaml"))
    assert kust["resources"] == manifests
    assert "secret.example.yaml" not in kust["resources"]
    overlay = yaml.safe_load((demo / "overlays/production/kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    assert overlay["images"] == [{"name": "registry.example.com/langchain-ha",
                                  "newName": "registry.example.com/langchain-ha",
                                  "newTag": "golden"}]
    for patch in overlay["patches"]:
        assert (demo / "overlays/production" / patch["path"]).is_file()
    for obj in objects(demo):
        assert obj["apiVersion"] and obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "lcha"


def test_matches_the_golden_files(demo: Path) -> None:
    rendered = {p.relative_to(demo): p.read_bytes() for p in demo.rglob("*") if p.is_file()}
    if os.environ.get("LCHA_UPDATE_GOLDEN") == "1" or not GOLDEN.exists():
        for rel, data in rendered.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
        pytest.skip(f"golden files written to {GOLDEN}; check them in")
    golden = {p.relative_to(GOLDEN): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(rendered) == sorted(golden)
    for rel, data in rendered.items():
        assert data == golden[rel], f"{rel} differs from the golden file (LCHA_UPDATE_GOLDEN=1)"


def test_core_kinds_validate_against_kubernetes_1_30(demo: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    objs = objects(demo)
    patch = yaml.safe_load_all((demo / "overlays/production/ingress-patch.yaml").read_text())
    core = [o for o in [*objs, *patch] if o and o["kind"] in CORE_KINDS]
    assert {o["kind"] for o in core} == CORE_KINDS
    for obj in core:
        kv.validate(obj, "1.30.0", strict=True)
    assert {o["kind"] for o in objs} - CORE_KINDS == CRD_KINDS


def test_crd_kinds_have_their_required_fields(demo: Path) -> None:
    objs = objects(demo)
    cluster = one(objs, "Cluster", "lcha-db")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == 3 and "postgresql" in spec["imageName"]
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1,
                                                 "dataDurability": "preferred"}
    assert spec["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    initdb = spec["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"], initdb["secret"]["name"]) == (
        "lcha", "lcha", "lcha-db-app")
    assert "CREATE EXTENSION IF NOT EXISTS vector" in initdb["postInitApplicationSQL"]
    [plugin] = spec["plugins"]
    assert plugin["isWALArchiver"] is True
    store = one(objs, "ObjectStore", plugin["parameters"]["barmanObjectName"])
    conf = store["spec"]["configuration"]
    assert conf["destinationPath"].startswith("s3://")
    for ref in conf["s3Credentials"].values():
        assert ref["name"] == "lcha-db-backup-s3" and ref["key"]
    backup = one(objs, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == "lcha-db"
    assert backup["spec"]["method"] == "plugin"
    assert len(backup["spec"]["schedule"].split()) == 6  # CNPG cron has seconds
    service = one(objs, "Service", "lcha")
    monitor = one(objs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in ports and e["path"] == "/metrics"
               for e in monitor["spec"]["endpoints"])
    pods = one(objs, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "lcha-db"}
    rule = one(objs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["spec"]["groups"]


@pytest.mark.parametrize(("mode", "durability"), [("sync", "preferred"), ("strict", "required"),
                                                  ("async", None)])
def test_replication_mode_maps_to_cnpg(tmp_path: Path, mode: str, durability: str | None,
                                       ) -> None:
    topo = topo_from(tmp_path, f"database: {{replication: {mode}}}\n")
    render_k8s(topo, tmp_path / "out")
    objs = objects(tmp_path / "out")
    sync = one(objs, "Cluster")["spec"]["postgresql"].get("synchronous")
    alerts = {r["alert"] for g in one(objs, "PrometheusRule")["spec"]["groups"]
              for r in g["rules"]}
    if durability is None:
        assert sync is None and "LchaDbNoStandby" in alerts
    else:
        assert sync["dataDurability"] == durability and "LchaDbNoSyncStandby" in alerts


def test_deployment_spreads_probes_drains_and_is_locked_down(tmp_path: Path) -> None:
    topo = topo_from(tmp_path, "zones: [eu-a, eu-b]\nreplicas: {per_zone: 2, drain_timeout_s: 45}\n"
                     "balancer: {checks: {interval_s: 2, timeout_s: 1.5, healthy_threshold: 3,"
                     " unhealthy_threshold: 4}}\n")
    render_k8s(topo, tmp_path / "out")
    deploy = one(objects(tmp_path / "out"), "Deployment", "lcha")
    assert deploy["spec"]["replicas"] == 4
    pod = deploy["spec"]["template"]["spec"]
    zone, host = pod["topologySpreadConstraints"]
    assert (zone["topologyKey"], zone["whenUnsatisfiable"], zone["maxSkew"]) == (
        "topology.kubernetes.io/zone", "DoNotSchedule", 1)
    assert (host["topologyKey"], host["whenUnsatisfiable"]) == (
        "kubernetes.io/hostname", "ScheduleAnyway")
    assert zone["labelSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    [c] = pod["containers"]
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready["httpGet"]["path"] == "/readyz" and live["httpGet"]["path"] == "/livez"
    assert (ready["periodSeconds"], ready["timeoutSeconds"], ready["failureThreshold"],
            ready["successThreshold"]) == (2, 2, 4, 3)
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert sleep > 0
    grace = drain_grace_s(topo)
    assert pod["terminationGracePeriodSeconds"] >= sleep + grace + 45
    env = env_of(deploy)
    assert float(env["LCHA_DRAIN_GRACE_S"]["value"]) == grace
    assert env["LCHA_DRAIN_TIMEOUT_S"]["value"] == "45"
    assert "--host" in c["args"] and c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize(("zones", "per_zone"), [(3, 1), (3, 2), (2, 3), (1, 2)])
def test_pdb_lets_a_drain_take_at_most_one_replica_per_zone(tmp_path: Path, zones: int,
                                                            per_zone: int) -> None:
    names = ", ".join(f"z{i}" for i in range(zones))
    topo = topo_from(tmp_path, f"zones: [{names}]\nreplicas: {{per_zone: {per_zone}}}\n")
    render_k8s(topo, tmp_path / "out")
    objs = objects(tmp_path / "out")
    deploy, pdb = one(objs, "Deployment", "lcha"), one(objs, "PodDisruptionBudget")
    total = deploy["spec"]["replicas"]
    assert total == zones * per_zone
    spec = pdb["spec"]
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else total - spec[
        "minAvailable"]
    assert allowed == 1  # one eviction at a time: never two replicas of a zone together
    assert spec["selector"] == deploy["spec"]["selector"]


def test_hpa_bounds_and_metrics_follow_the_topology(tmp_path: Path) -> None:
    topo = topo_from(tmp_path, "replicas: {min_per_zone: 1, per_zone: 2, max_per_zone: 5, "
                     "scale_up_inflight: 12}\n")
    render_k8s(topo, tmp_path / "out")
    hpa = one(objects(tmp_path / "out"), "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 15)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "lcha"}
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    pods = kinds["Pods"]["pods"]
    assert pods["metric"]["name"] == "lcha_inflight_requests"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "12"}


def test_no_secret_value_is_inline(demo: Path) -> None:
    for path in demo.rglob("*"):
        if path.is_file():
            assert "password=" not in path.read_text().lower(), path
    objs = objects(demo)
    assert not [o for o in objs if o["kind"] == "Secret"]
    for deploy in (o for o in objs if o["kind"] == "Deployment"):
        for name, e in env_of(deploy).items():
            if re.search(r"KEY|TOKEN|PASSWORD|HASHES|SECRET", name):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], name
    env = env_of(one(objs, "Deployment", "lcha"))
    assert env["LCHA_DB_WRITER"]["value"] == "host=lcha-db-rw port=5432 dbname=lcha user=lcha"
    assert env["LCHA_DB_READER"]["value"].startswith("host=lcha-db-ro ")
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "lcha-db-app",
                                                              "key": "password"}
    assert env["LCHA_API_KEY_HASHES"]["valueFrom"]["secretKeyRef"]["name"] == "lcha-secrets"
    example = (demo / "base" / "secret.example.yaml").read_text()
    assert all(line.startswith("#") for line in example.splitlines())
    body = "\n".join(line[2:] for line in example.splitlines() if line.startswith("# "))
    secrets = [d for d in yaml.safe_load_all(body[body.index("---"):]) if d]
    assert {s["metadata"]["name"] for s in secrets} == {"lcha-secrets", "lcha-db-app",
                                                        "lcha-db-backup-s3"}
    for secret in secrets:
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert key == "username" or (value.startswith("<") and value.endswith(">")), key


def test_real_providers_and_no_database(tmp_path: Path) -> None:
    topo = topo_from(tmp_path, """
database: {enabled: false}
providers:
  - {name: primary, simulated: false, base_url: "https://api.openai.com/v1/",
     api_key_env: OPENAI_API_KEY, model: gpt-4.1-mini}
  - {name: secondary, simulated: false, kind: anthropic, model: claude-sonnet-4-5,
     api_key_env: ANTHROPIC_API_KEY}
""")
    out = tmp_path / "out"
    render_k8s(Topology(), out)  # first with the demo, then re-rendered: stale files go
    (out / "mine.yaml").write_text("kind: keep-me\n")
    render_prometheus(topo, out)  # its alerts.yml is not a k8s leftover
    render_k8s(topo, out)
    assert (out / "alerts.yml").exists()
    assert not (out / "10-postgres.yaml").exists() and not (out / "20-simulators.yaml").exists()
    assert (out / "mine.yaml").exists()
    objs = objects(out)
    assert {o["kind"] for o in objs}.isdisjoint({"Cluster", "PodMonitor", "ObjectStore"})
    env = env_of(one(objs, "Deployment", "lcha"))
    providers = json.loads(env["LCHA_PROVIDERS"]["value"])
    assert [(p["kind"], p["model"], p.get("base_url")) for p in providers] == [
        ("openai", "gpt-4.1-mini", "https://api.openai.com/v1/"),
        ("anthropic", "claude-sonnet-4-5", None)]
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "lcha-secrets", "key": "OPENAI_API_KEY"}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "lcha-secrets", "key": "ANTHROPIC_API_KEY"}
    # One mapping: no provider travels outside LCHA_PROVIDERS.
    assert not [name for name in env if name.startswith(("LCHA_PRIMARY", "LCHA_SECONDARY"))]
    assert not {"LCHA_DB_WRITER", "PGPASSWORD", "LCHA_TOOLS_URL"} & set(env)
    exprs = " ".join(r["expr"] for g in one(objs, "PrometheusRule")["spec"]["groups"]
                     for r in g["rules"])
    assert "cnpg_" not in exprs


def _check_rules(groups: list[Obj], job: str) -> set[str]:
    promql = _promql()
    names: list[str] = []
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert DURATION.match(rule["for"]), rule
            assert rule["labels"]["severity"] in SEVERITIES
            assert rule["annotations"]["summary"].strip()
            if "lcha_" in rule["expr"] or rule["expr"].startswith("up{"):
                assert f'job="{job}"' in rule["expr"], rule  # the scrape job's name
            if promql is not None:
                promql.parse(rule["expr"])
    assert len(names) == len(set(names))
    return set(names)


def _promql() -> Any:
    try:
        import promql_parser
    except ImportError:
        return None
    return promql_parser


def test_alert_rules_parse_and_cover_the_failure_modes(demo: Path, tmp_path: Path) -> None:
    groups = one(objects(demo), "PrometheusRule")["spec"]["groups"]
    names = _check_rules(groups, "lcha")
    assert {"LchaHighErrorRate", "LchaHighLatencyP99", "LchaBreakerOpen", "LchaDegradedAnswers",
            "LchaReplicasUnavailable", "LchaDbReplicationLag", "LchaDbNoSyncStandby",
            "LchaDbFailover"} <= names
    render_prometheus(Topology(), tmp_path / "prom")
    local = yaml.safe_load((tmp_path / "prom" / "alerts.yml").read_text())
    local_names = _check_rules(local["groups"], "lcha")
    assert local_names < names and "LchaHighErrorRate" in local_names
    local_exprs = " ".join(r["expr"] for g in local["groups"] for r in g["rules"])
    assert "kube_" not in local_exprs and "cnpg_" not in local_exprs


def test_grafana_dashboard_panels_read_lcha_metrics(demo: Path) -> None:
    raw = (demo / "grafana" / "lcha-dashboard.json").read_text()
    board = json.loads(raw)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    metrics = set(re.findall(r"\blcha_[a-z_]+", " ".join(exprs)))
    assert {"lcha_http_requests_total", "lcha_http_request_seconds_bucket",
            "lcha_inflight_requests", "lcha_breaker_state",
            "lcha_degraded_answers_total"} <= metrics
    promql = _promql()
    if promql is not None:
        for expr in exprs:
            promql.parse(expr.replace("$__rate_interval", "5m"))
    cm = one(objects(demo), "ConfigMap", "lcha-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["lcha-dashboard.json"] == raw


def test_render_prometheus_writes_a_local_setup(tmp_path: Path) -> None:
    out = tmp_path / "prom"
    paths = render_prometheus(Topology(), out)
    assert {p.name for p in paths} == {"alerts.yml", "prometheus.yml", "targets.json",
                                       "grafana-dashboard.json"}
    conf = yaml.safe_load((out / "prometheus.yml").read_text())
    assert conf["rule_files"] == ["alerts.yml"]
    [job] = conf["scrape_configs"]
    assert job["job_name"] == "lcha"
    assert job["file_sd_configs"][0]["files"] == ["targets.json"]
    assert isinstance(json.loads((out / "targets.json").read_text()), list)
    json.loads((out / "grafana-dashboard.json").read_text())
    (out / "targets.json").write_text('[{"targets": ["127.0.0.1:20001"]}]\n')
    again = render_prometheus(Topology(), out)
    assert "targets.json" not in {p.name for p in again}  # the user's targets are kept
    assert "20001" in (out / "targets.json").read_text()


def test_dockerfile_is_copied_and_runs_as_non_root(demo: Path) -> None:
    text = (demo / "Dockerfile").read_text()
    assert text == DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert "lcha" in text.split("ENTRYPOINT", 1)[1] and "serve" in text.split("CMD", 1)[1]


def test_cli_renders_with_namespace_and_image(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = parse(["render", "k8s", "-o", str(out), "--namespace", "prod",
                  "--image", "reg.example.com:5000/lcha:1.2"])
    assert args.handler(args) == 0
    assert "wrote" in capsys.readouterr().out
    objs = objects(out)
    assert one(objs, "Namespace")["metadata"]["name"] == "prod"
    assert all(o["metadata"].get("namespace", "prod") == "prod" for o in objs)
    image = one(objs, "Deployment", "lcha")["spec"]["template"]["spec"]["containers"][0][
        "image"]
    assert image == "reg.example.com:5000/lcha:1.2"
    assert split_image(image) == ("reg.example.com:5000/lcha", "1.2")
    assert split_image("reg.example.com:5000/lcha") == ("reg.example.com:5000/lcha", "latest")
    args = parse(["render", "prometheus", "-o", str(tmp_path / "prom")])
    assert args.handler(args) == 0


def test_a_broken_topology_is_one_usage_error_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "lcha.yaml"
    bad.write_text("replicas: {per_zone: 0, colour: blue}\n")
    for target in ("k8s", "prometheus"):
        args = parse(["render", target, "-f", str(bad), "-o", str(tmp_path / "out")])
        with pytest.raises(UsageError) as info:
            args.handler(args)
        text = str(info.value)
        assert "\n" not in text and "replicas.per_zone" in text and "replicas.colour" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--namespace", "Bad_NS"], "--namespace"),
    (["--image", "has space:1"], "--image"),
])
def test_bad_options_are_usage_errors(tmp_path: Path, argv: list[str], needle: str) -> None:
    args = parse(["render", "k8s", "-o", str(tmp_path / "out"), *argv])
    with pytest.raises(UsageError, match=needle):
        args.handler(args)


def test_a_name_kubernetes_cannot_use_is_a_usage_error(tmp_path: Path) -> None:
    topo = topo_from(tmp_path, "name: lcha-\n")
    with pytest.raises(UsageError, match="name: 'lcha-'"):
        render_k8s(topo, tmp_path / "out")


def test_output_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        render_k8s(Topology(), target)
    with pytest.raises(UsageError, match="not a directory"):
        render_prometheus(Topology(), target)


def test_termination_grace_covers_the_drain() -> None:
    topo = Topology()
    expected = k8s.PRESTOP_SLEEP_S + drain_grace_s(topo) + topo.replicas.drain_timeout_s
    assert k8s.termination_grace_s(topo) >= math.ceil(expected)


def test_ingress_routes_the_api_alone(demo: Path) -> None:
    """L8: only ``/v1`` is public, in the base and in the production overlay; ``/metrics``,
    ``/admin/*``, ``/openapi.json`` and the probes are not routed."""
    patch = yaml.safe_load((demo / "overlays/production/ingress-patch.yaml").read_text())
    for ing in (one(objects(demo), "Ingress", "lcha"), patch):
        paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
        assert [(p["path"], p["pathType"]) for p in paths] == [("/v1", "Prefix")]


def test_network_policy_lets_only_the_ingress_and_monitoring_in(tmp_path: Path) -> None:
    """L8: replicas accept connections from the ingress controller's namespace and the
    monitoring namespace only (both configurable), and open them to DNS, the database and
    the simulators only; a simulator accepts the replicas alone and opens nothing."""
    out = tmp_path / "out"
    render_k8s(Topology(), out, ingress_namespace="traefik", monitoring_namespace="observe")
    objs = objects(out)
    policy = one(objs, "NetworkPolicy", "lcha")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == one(objs, "Deployment", "lcha")["spec"][
        "selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in spec["ingress"] for peer in rule["from"]]
    assert sources == ["traefik", "observe"]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in spec["ingress"])
    to = {json.dumps(peer, sort_keys=True): rule["ports"] for rule in spec["egress"]
          for peer in rule["to"]}
    dns = next(p for p in to if "kube-dns" in p)
    assert {port["port"] for port in to[dns]} == {53}
    db = next(p for p in to if "cnpg.io/cluster" in p)
    assert "lcha-db" in db and to[db] == [{"port": 5432, "protocol": "TCP"}]
    assert len(to) == 4  # DNS, the database, two simulators: nothing else, no ipBlock
    for sim in ("lcha-sim-primary", "lcha-sim-secondary"):
        sim_spec = one(objs, "NetworkPolicy", sim)["spec"]
        assert sim_spec["egress"] == []
        [rule] = sim_spec["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": spec["podSelector"][
            "matchLabels"]}}]
    with pytest.raises(UsageError, match="--ingress-namespace"):
        render_k8s(Topology(), out, ingress_namespace="Bad_NS")


def test_real_providers_are_reached_on_their_port_outside_private_ranges(
        tmp_path: Path) -> None:
    """L8: egress to a real provider is its URL's port on public addresses (the cluster's
    private ranges and the cloud metadata address excluded)."""
    topo = topo_from(tmp_path, """
database: {enabled: false}
providers:
  - {name: primary, simulated: false, kind: anthropic, model: claude-sonnet-4-5,
     api_key_env: OPENAI_API_KEY}
  - {name: secondary, simulated: false, base_url: "https://llm.example.com:8443/v1",
     kind: openai-compatible, model: llama, api_key_env: OTHER_KEY}
""")
    render_k8s(topo, tmp_path / "out")
    objs = objects(tmp_path / "out")
    egress = one(objs, "NetworkPolicy", "lcha")["spec"]["egress"]
    [public] = [rule for rule in egress if "ipBlock" in rule["to"][0]]
    block = public["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        block["except"])
    assert [p["port"] for p in public["ports"]] == [443, 8443]
    assert not [rule for rule in egress if "cnpg.io/cluster" in json.dumps(rule)]
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "NetworkPolicy"] == ["lcha"]


def test_the_database_is_reached_over_tls_verified_against_the_cnpg_ca(demo: Path) -> None:
    """L8: ``verify-full`` against CloudNativePG's CA; only ``ca.crt`` of its Secret is
    mounted (the Secret also holds the CA's key), read-only."""
    deploy = one(objects(demo), "Deployment", "lcha")
    env = env_of(deploy)
    assert env["PGSSLMODE"]["value"] == "verify-full"
    pod = deploy["spec"]["template"]["spec"]
    [ca] = [v for v in pod["volumes"] if v["name"] == "db-ca"]
    assert ca["secret"]["secretName"] == "lcha-db-ca"
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "db-ca"]
    assert mount["readOnly"] is True
    assert env["PGSSLROOTCERT"]["value"] == f"{mount['mountPath']}/ca.crt"
    # The conninfo dials the service names the server certificate carries.
    assert env["LCHA_DB_WRITER"]["value"].startswith("host=lcha-db-rw ")


def test_two_providers_sharing_a_key_render_it_once(tmp_path: Path) -> None:
    topo = topo_from(tmp_path, """
database: {enabled: false}
providers:
  - {name: fast, simulated: false, model: gpt-4.1-mini, api_key_env: OPENAI_API_KEY}
  - {name: big, simulated: false, model: gpt-4.1, api_key_env: OPENAI_API_KEY}
""")
    render_k8s(topo, tmp_path / "out")
    [container] = one(objects(tmp_path / "out"), "Deployment", "lcha")["spec"]["template"][
        "spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    assert names.count("OPENAI_API_KEY") == 1
    assert len(names) == len(set(names))
