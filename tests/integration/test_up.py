"""``lcha up``: the whole deployment answers through its balancer (HAProxy, else Caddy),
survives a replica SIGKILL, a balancer SIGKILL and a rollout under load with no failed request,
heals, adopts after a supervisor crash, and ``lcha down`` leaves nothing running."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import time
from pathlib import Path

import httpx
import psutil
import pytest

from langchain_ha._proc import pid_matches, port_is_listening
from langchain_ha.cluster.haproxy import haproxy_binary
from langchain_ha.cluster.state import ReplicaRecord
from langchain_ha.drills.load import run_load, summarize
from tests.support.fixtures_up import PARENT_ONLY_KEY, REPLICA_SETTING, Deployment
from tests.support.stranger import READ, UNIX_CONNECT, as_stranger

pytestmark = pytest.mark.timeout(600)


def _ask(dep: Deployment, question: str) -> httpx.Response:
    return httpx.post(f"{dep.url}/v1/invoke", json={"input": {"question": question}},
                      headers={"Authorization": f"Bearer {dep.api_key}"}, timeout=30)


def _wait(predicate, timeout: float = 90.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _ready_replicas(dep: Deployment) -> list[ReplicaRecord]:
    return [r for r in dep.sd.state().replicas if r.state == "ready"]


def test_demo_answers_through_the_balancer(deployment: Deployment) -> None:
    resp = _ask(deployment, "How many family members can share the Family plan?")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "faq-003" in body["output"]["sources"]
    assert body["zone"] in ("az1", "az2", "az3")
    unauthorized = httpx.post(f"{deployment.url}/v1/invoke", json={"input": "hi"}, timeout=10)
    assert unauthorized.status_code == 401


def test_status_json_names_every_process_and_the_database(deployment: Deployment) -> None:
    status = deployment.status()
    roles = {p["role"] for p in status["processes"]}
    assert {"supervisor", "balancer", "simulator", "replica", "db-postgres"} <= roles
    for proc in status["processes"]:
        assert isinstance(proc["pid"], int) and proc["pid"] > 0
    replicas = [p for p in status["processes"] if p["role"] == "replica"]
    assert sorted(p["zone"] for p in replicas) == ["az1", "az2", "az3"]
    assert all(port_is_listening(p["port"]) for p in replicas)
    # Ready replicas serve at serving_nice: request work yields the CPU to the balancer, the
    # database and the supervisor (which stay at 0) on a shared machine.
    for r in _ready_replicas(deployment):
        assert r.pid and os.getpriority(os.PRIO_PROCESS, r.pid) == 5
    supervisor = next(p for p in status["processes"] if p["role"] == "supervisor")
    assert os.getpriority(os.PRIO_PROCESS, supervisor["pid"]) == 0
    db = status["database"]
    assert "target_session_attrs=read-write" in db["writer"]
    assert "prefer-standby" in db["reader"]
    assert sorted(m["role"] for m in db["members"]).count("leader") == 1
    # Every balancer slot is listed (zones x (max_per_zone + 1)); replicas sit in slots.
    slots = {u["address"] for u in status["balancer"]["upstreams"]}
    assert len(slots) == 3 * 4
    assert {f"127.0.0.1:{p['port']}" for p in replicas} <= slots
    # the simulators' faults are read through their authenticated admin API
    assert status["simulators"] and all(
        s["faults"] is not None and s["faults"]["active"] is False
        for s in status["simulators"].values())
    text = deployment.lcha("status")
    assert "az1" in text.stdout and "leader" in text.stdout
    assert "ready: http" in deployment.lcha("logs").stdout  # the supervisor's sentences
    kind = status["balancer"]["kind"]
    assert kind == ("haproxy" if haproxy_binary() else "caddy")
    assert f"balancer: {kind}" in text.stdout
    assert deployment.lcha("logs", kind).returncode == 0
    missing = deployment.lcha("logs", "nope")
    assert missing.returncode == 2 and "replica-az1" in missing.stderr


async def test_replica_sigkill_under_load_fails_no_request(deployment: Deployment) -> None:
    before = {r.id: r for r in _ready_replicas(deployment)}
    victim = next(iter(before.values()))
    # A quarter of the demo's measured capacity (120 req/s, docs/results/capacity.json): the
    # survivors and a replacement starting beside them on 2 cores stay within their room on a
    # slower machine too (at 60 req/s a CI machine shed 4 of 720 while the replacement started).
    load = run_load(deployment.url, deployment.api_key, rps=30, duration_s=12, run_id="kill")
    import asyncio

    task = asyncio.ensure_future(load)
    await asyncio.sleep(4)
    assert victim.pid
    os.kill(victim.pid, signal.SIGKILL)
    outcomes = await task
    summary = summarize(outcomes)
    failed = [o for o in outcomes if o.outcome == "failed"]
    assert not failed, (summary, failed[:3])
    assert summary["correct_ratio"] == 1.0
    replacement = _wait(lambda: [r for r in _ready_replicas(deployment)
                                 if r.zone == victim.zone and r.id not in before],
                        what="a replacement replica")
    assert replacement[0].pid != victim.pid
    decisions = " ".join(deployment.sd.state().decisions)
    assert f"replica {victim.id}" in decisions and "exited unexpectedly" in decisions


async def test_rollout_under_load_fails_no_request(deployment: Deployment) -> None:
    import asyncio

    generation = deployment.sd.state().generation
    task = asyncio.ensure_future(
        run_load(deployment.url, deployment.api_key, rps=25, duration_s=30, run_id="roll"))
    await asyncio.sleep(2)
    done = await asyncio.to_thread(deployment.lcha, "rollout")
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = await task
    failed = [o for o in outcomes if o.outcome == "failed"]
    assert not failed, (summarize(outcomes), failed[:3])
    state = deployment.sd.state()
    assert state.generation == generation + 1
    assert {r.generation for r in state.replicas} == {generation + 1}
    assert "rollout" in done.stdout and "zone az3" in done.stdout


def test_canary_rollout_weights_then_promotes(deployment: Deployment) -> None:
    generation = deployment.sd.state().generation
    done = deployment.lcha("rollout", "--canary", "20", "--hold", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "takes 20% of the traffic" in done.stdout and "canary healthy" in done.stdout
    state = deployment.sd.state()
    assert {r.generation for r in state.replicas} == {generation + 1}
    assert all(r.weight == 1 for r in state.replicas)  # weights back to even
    bad = deployment.lcha("rollout", "--canary", "150")
    assert bad.returncode == 2 and "--canary" in bad.stderr


def test_scale_changes_replicas_per_zone(deployment: Deployment) -> None:
    bad = deployment.lcha("scale", "9")
    assert bad.returncode == 2 and "max_per_zone" in bad.stderr
    up = deployment.lcha("scale", "2")
    assert up.returncode == 0, up.stderr
    assert sorted(r.zone for r in _ready_replicas(deployment)) == ["az1", "az1", "az2",
                                                                      "az2", "az3", "az3"]
    down = deployment.lcha("scale", "1")
    assert down.returncode == 0, down.stderr
    assert len(deployment.sd.state().replicas) == 3


def test_a_new_supervisor_adopts_what_is_running(deployment: Deployment) -> None:
    state = deployment.sd.state()
    pids = sorted(r.pid or 0 for r in state.replicas)
    assert state.supervisor.pid
    os.killpg(state.supervisor.pid, signal.SIGKILL)
    _wait(lambda: deployment.sd.supervisor_pid() is None, 10, "the supervisor to die")
    assert _ask(deployment, "How do I reset my password?").status_code == 200  # still serving
    again = deployment.lcha("up", "--demo", "--port", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "adopt" in again.stdout
    after = deployment.sd.state()
    assert sorted(r.pid or 0 for r in after.replicas) == pids
    assert after.supervisor.pid != state.supervisor.pid
    assert _ask(deployment, "How do I reset my password?").status_code == 200


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus on PATH")
def test_local_prometheus_scrapes_the_replicas_with_the_rules(deployment: Deployment) -> None:
    prom = deployment.sd.state().prometheus
    ports = {f"127.0.0.1:{r.port}" for r in _ready_replicas(deployment)}

    def scraped() -> bool:
        targets = httpx.get(f"{prom.url}/api/v1/targets", timeout=5).json()
        up = {t["labels"]["instance"] for t in targets["data"]["activeTargets"]
              if t["health"] == "up"}
        return ports <= up

    _wait(scraped, 60, "prometheus to scrape every replica")
    rules = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert any(r["name"] for g in rules for r in g["rules"])


def _all_secrets(dep: Deployment) -> list[str]:
    values = list(dep.sd.secrets().values())
    values += json.loads((dep.sd.db_dir / "secrets.json").read_text()).values()
    return [str(v) for v in values]


def test_the_state_directory_is_private_and_no_output_shows_a_secret(
        deployment: Deployment) -> None:
    """M3/L3/L5: every directory of the deployment is 0700 and every file 0600 or stricter;
    state.json and ``lcha status`` (text and --json) show no secret; the database's conninfo
    names its passfile instead of holding a password."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(deployment.state_dir):
        for name in (*dirnames, *filenames):
            mode = os.lstat(Path(dirpath) / name).st_mode
            if stat.S_ISLNK(mode):
                continue
            if stat.S_IMODE(mode) & 0o077 or (stat.S_ISDIR(mode) and stat.S_IMODE(mode) != 0o700):
                loose.append(f"{dirpath}/{name} {oct(stat.S_IMODE(mode))}")
    assert not loose, loose
    assert stat.S_IMODE(deployment.state_dir.stat().st_mode) == 0o700
    as_json = deployment.lcha("status", "--json").stdout
    shown = as_json + deployment.lcha("status").stdout
    state = deployment.sd.state_file.read_text()
    for secret in _all_secrets(deployment):
        assert secret not in state and secret not in shown
    db = json.loads(as_json)["database"]
    assert "password" not in db["writer"] and "passfile=" in db["writer"]
    files = [deployment.sd.state_file, deployment.sd.root / "secrets.json",
             deployment.sd.db_dir / "secrets.json", deployment.sd.db_dir / "pgpass",
             *sorted(deployment.sd.logs.glob("*.log"))]
    out = as_stranger(READ.format(paths=json.dumps([str(p) for p in files])), reach=files)
    assert set(out.values()) == {"PermissionError"}, out


def test_children_run_as_their_own_users_with_only_their_environment(
        deployment: Deployment) -> None:
    """L4: replicas run as lcha-serve, the database as lcha, neither as root; a provider key
    in lcha up's environment that the topology does not name reaches no child; LCHA_*
    settings and the database password reach the replicas alone."""
    status = deployment.status()
    serve, db = pwd.getpwnam("lcha-serve").pw_uid, pwd.getpwnam("lcha").pw_uid
    by_role: dict[str, list[dict[str, str]]] = {}
    for proc in status["processes"]:
        if proc["role"] == "supervisor":
            continue
        uid = int(Path(f"/proc/{proc['pid']}/status").read_text().split("Uid:")[1].split()[0])
        if proc["role"] == "replica":
            assert uid == serve, proc
        if proc["role"].startswith("db-"):
            assert uid == db, proc
        by_role.setdefault(proc["role"], []).append(_environ(proc["pid"]))
    assert {"replica", "balancer", "simulator", "db-patroni", "db-postgres"} <= set(by_role)
    for role, envs in by_role.items():
        for env in envs:
            assert PARENT_ONLY_KEY not in env.values() and "OPENAI_API_KEY" not in env, role
            gets = role == "replica"
            assert (env.get(REPLICA_SETTING[0]) == REPLICA_SETTING[1]) is gets, role
            assert ("PGPASSWORD" in env) is gets, role


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in raw if b"=" in i)


def test_the_balancer_has_no_tcp_admin_and_its_socket_is_private(deployment: Deployment
                                                                 ) -> None:
    """M4: the balancer (HAProxy or Caddy) listens on its port alone; its control socket
    (0600, in a 0700 directory) answers us and refuses another user who can walk up to it."""
    lb = deployment.sd.state().balancer
    listening = {c.laddr for c in psutil.Process(lb.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", lb.port)}
    sock = Path(str(lb.admin_socket))
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert deployment.status()["balancer"]["upstreams"]  # our own view, over the socket
    assert as_stranger(UNIX_CONNECT.format(path=str(sock)), reach=[sock]) == "PermissionError"


def test_a_balancer_that_dies_is_restarted_and_answers_again(deployment: Deployment) -> None:
    """The supervisor's "balancer was gone" path: SIGKILL the balancer; the supervisor starts
    it again on the same URL with every slot, and requests are answered through it."""
    lb = deployment.sd.state().balancer
    assert lb.pid
    os.kill(lb.pid, signal.SIGKILL)
    restarted = _wait(lambda: (deployment.sd.state().balancer.pid != lb.pid
                               and deployment.sd.state().balancer.pid),
                      what="a restarted balancer")
    decisions = " ".join(deployment.sd.state().decisions)
    assert f"{lb.kind} (the load balancer) was gone; restarting" in decisions
    assert f"{lb.kind} (the load balancer) restarted on {lb.url}" in decisions
    assert psutil.Process(restarted).is_running()
    resp = _wait(lambda: (r := _try_ask(deployment)) is not None and r.status_code == 200 and r,
                 what="an answer through the restarted balancer")
    assert resp.status_code == 200
    assert len(deployment.status()["balancer"]["upstreams"]) == 3 * 4


def _try_ask(dep: Deployment) -> httpx.Response | None:
    try:
        return _ask(dep, "How do I reset my password?")
    except httpx.HTTPError:
        return None


def test_lcha_logs_reads_nothing_outside_the_state_directory(deployment: Deployment) -> None:
    """L6: a name that is a path is refused, and says which logs there are (the first one
    reaches a real file next to the state directory)."""
    outside = deployment.state_dir.parent / "outside.log"
    outside.write_text("not ours to show\n")
    for name in ("../../outside", "../secrets", "db/../../x"):
        done = deployment.lcha("logs", name)
        assert done.returncode == 2 and "NAME" in done.stderr, done
        assert "not ours" not in done.stdout and "supervisor" in done.stderr


def test_down_leaves_nothing_running(deployment: Deployment) -> None:
    status = deployment.status()
    pids = [p["pid"] for p in status["processes"]]
    ports = [p["port"] for p in status["processes"] if p.get("port")]
    admin_socket = status["balancer"]["admin_socket"]
    done = deployment.lcha("down", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]
    assert not alive, alive
    assert not [p for p in ports if port_is_listening(int(p))]
    assert not os.path.exists(admin_socket)
    assert deployment.sd.supervisor_pid() is None
    assert not pid_matches(status["supervisor"]["pid"], "supervisor")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True
