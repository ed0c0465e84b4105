"""The topology model (lcha.yaml + environment + flags) and the Caddy config built from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from langchain_ha._usage import UsageError
from langchain_ha.cluster.balancer import Upstream
from langchain_ha.cluster.caddy import caddy_config
from langchain_ha.cluster.topology import Balancer, Topology, load_topology

BROKEN = """
zones: [az1, "Bad Zone"]
replicas: {per_zone: 5, max_per_zone: 3, colour: blue}
balancer: {checks: {interval_s: 0}}
database: {dcs: etcd}
providers: [{name: primary, simulated: false}, {name: secondary}]
tpyo: 1
"""


def test_every_error_is_reported_with_its_field(tmp_path: Path) -> None:
    path = tmp_path / "lcha.yaml"
    path.write_text(BROKEN)
    with pytest.raises(UsageError) as info:
        load_topology(path)
    text = str(info.value)
    for field in ("zones.1", "replicas.colour", "balancer.checks.interval_s", "database",
                  "providers.0", "tpyo"):
        assert f"\n  {field}:" in text, text
    assert "6 error(s)" in text


def test_validate_cli_exits_2_and_names_fields(tmp_path: Path) -> None:
    path = tmp_path / "lcha.yaml"
    path.write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "langchain_ha.cli", "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "replicas.colour" in done.stderr and "Traceback" not in done.stderr
    path.write_text("zones: [eu-1a, eu-1b]\nreplicas: {per_zone: 2}\n")
    good = subprocess.run([sys.executable, "-m", "langchain_ha.cli", "validate", str(path)],
                          capture_output=True, text=True, check=False)
    assert good.returncode == 0 and "2 zones x 2 replica(s)" in good.stdout


@pytest.mark.parametrize("text", ["zones: [", "- just\n- a list\n"])
def test_unreadable_files_get_one_clear_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "lcha.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=str(path)):
        load_topology(path)


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lcha.yaml"
    path.write_text("replicas: {per_zone: 2, max_per_zone: 4}\nbalancer: {port: 9000}\n")
    assert load_topology(path).replicas.per_zone == 2
    monkeypatch.setenv("LCHA_UP__REPLICAS__PER_ZONE", "3")
    topo = load_topology(path)
    assert topo.replicas.per_zone == 3 and topo.replicas.max_per_zone == 4
    assert load_topology(path, replicas__per_zone=4).replicas.per_zone == 4
    assert load_topology(path, balancer__port=None).balancer.port == 9000


def test_active_passive_zones() -> None:
    topo = Topology(mode="active-passive", zones=["a", "b", "c"], active_zones=["b"])
    assert [topo.is_active(z) for z in topo.zones] == [False, True, False]
    assert Topology(mode="active-passive").is_active("az1")
    with pytest.raises(ValueError, match="active_zones"):
        Topology(mode="active-passive", active_zones=["nowhere"])


def _proxy(config: dict) -> dict:  # type: ignore[type-arg]
    return config["apps"]["http"]["servers"]["lcha"]["routes"][1]["handle"][0]


def test_caddy_config_retries_api_posts_and_adds_an_idempotency_key(tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    config = caddy_config(Balancer(), 8080, sock, [Upstream(1001), Upstream(1002)], tmp_path)
    assert config["admin"]["listen"] == f"unix/{sock}|0600"
    server = config["apps"]["http"]["servers"]["lcha"]
    assert server["listen"] == ["127.0.0.1:8080"]
    add_key = server["routes"][0]
    assert add_key["match"] == [{"header": {"Idempotency-Key": None}}]  # only when absent
    proxy = _proxy(config)
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:1001", "127.0.0.1:1002"]
    lb = proxy["load_balancing"]
    assert {"path": ["/v1/*"]} in lb["retry_match"] and lb["retries"] == 0  # try_duration bounds
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"
    assert proxy["request_buffers"] > 1 << 20  # bodies kept for retries


def test_caddy_config_weights_a_canary_and_orders_standbys_last(tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    weighted = _proxy(caddy_config(Balancer(), 1, sock, [Upstream(1, 90), Upstream(2, 30)],
                                   tmp_path))
    assert weighted["load_balancing"]["selection_policy"] == {
        "policy": "weighted_round_robin", "weights": [90, 30]}
    passive = _proxy(caddy_config(Balancer(), 1, sock, [Upstream(1, standby=True), Upstream(2)],
                                  tmp_path))
    assert passive["load_balancing"]["selection_policy"] == {"policy": "first"}
    assert [u["dial"] for u in passive["upstreams"]] == ["127.0.0.1:2", "127.0.0.1:1"]
